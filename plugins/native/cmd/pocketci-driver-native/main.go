// Command pocketci-driver-native is the native driver as an orchestra plugin:
// each task runs as a local process.
package main

import (
	"github.com/jtarchie/pocketci/plugins/native"
	"github.com/jtarchie/pocketci/pluginsdk"
)

func main() {
	pluginsdk.Serve(native.Provider())
}

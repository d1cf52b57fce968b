// Command pocketci-driver-mydriver is the mydriver driver as an orchestra
// plugin. Install it into a plugin directory; the orchestra host starts it.
package main

import (
	"example.com/mydriver"
	"github.com/jtarchie/pocketci/pluginsdk"
)

func main() {
	pluginsdk.Serve(mydriver.Provider())
}

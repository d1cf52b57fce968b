// Command pocketci-driver-ctxdriver serves the ctxdriver test fixture as a
// plugin.
package main

import (
	"github.com/jtarchie/pocketci/pluginsdk"
	"github.com/jtarchie/pocketci/pluginsdk/internal/ctxdriver"
)

func main() {
	pluginsdk.Serve(ctxdriver.Provider())
}

// Command pocketci-driver-ctxdriver serves the ctxdriver test fixture as a
// plugin.
package main

import (
	"github.com/jtarchie/pocketci/orchestra/conformance/internal/ctxdriver"
	"github.com/jtarchie/pocketci/pluginsdk"
)

func main() {
	pluginsdk.Serve(ctxdriver.Name, ctxdriver.New)
}

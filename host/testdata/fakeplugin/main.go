// Command fakeplugin is a test fixture: the native driver served as a plugin
// whose misbehaviour is chosen by environment variables.
//
//	FAKEPLUGIN_NAME    the name it reports (default: from its file name)
//	FAKEPLUGIN_STDOUT  printed to stdout before Serve, as a careless init might
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/jtarchie/pocketci/plugins/native"
	"github.com/jtarchie/pocketci/pluginsdk"
)

func main() {
	name := os.Getenv("FAKEPLUGIN_NAME")
	if name == "" {
		name = strings.TrimPrefix(filepath.Base(os.Args[0]), "pocketci-driver-")
	}
	if s := os.Getenv("FAKEPLUGIN_STDOUT"); s != "" {
		fmt.Println(s)
		fmt.Println(s)
	}
	pluginsdk.Serve(name, native.New)
}

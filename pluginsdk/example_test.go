package pluginsdk_test

import (
	"github.com/jtarchie/pocketci/plugins/native"
	"github.com/jtarchie/pocketci/pluginsdk"
)

// A plugin's whole main: serve a driver written to the orchestra guide under
// its name. Build it as pocketci-driver-native and put it in a plugin
// directory; the host starts it.
func ExampleServe() {
	pluginsdk.Serve("native", native.New)
}

// A driver whose containers belong to an engine that outlives the plugin
// keeps them when the host dies, for a new host to find again.
func ExampleKeepOnHostExit() {
	pluginsdk.Serve("native", native.New, pluginsdk.KeepOnHostExit())
}

package pluginsdk_test

import (
	"github.com/jtarchie/pocketci/plugins/native"
	"github.com/jtarchie/pocketci/pluginsdk"
)

// A plugin's whole main: serve a driver's provider, written to the orchestra
// guide; the plugin is called by the provider's name. Build it as pocketci-driver-native and put it in a plugin
// directory; the host starts it.
func ExampleServe() {
	pluginsdk.Serve(native.Provider())
}

// A driver whose containers belong to an engine that outlives the plugin
// keeps them when the host dies, for a new host to find again.
func ExampleKeepOnHostExit() {
	pluginsdk.Serve(native.Provider(), pluginsdk.KeepOnHostExit())
}

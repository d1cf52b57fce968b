// Command pocketci-driver-k8s serves the k8s orchestra driver as a pocketci
// plugin. The host starts it; it is not meant to be run by hand.
//
// The cluster owns the pods: when the host dies, the plugin exits and leaves
// them running, for a new host to find again by container ID.
package main

import (
	"github.com/jtarchie/pocketci/plugins/k8s"
	"github.com/jtarchie/pocketci/pluginsdk"
)

func main() { pluginsdk.Serve(k8s.Provider(), pluginsdk.KeepOnHostExit()) }

// Command pocketci-driver-docker serves the docker orchestra driver as a
// pocketci plugin. The host starts it; it is not meant to be run by hand.
//
// The Docker Engine owns the containers: when the host dies, the plugin exits
// and leaves them running, for a new host to find again by container ID.
package main

import (
	"github.com/jtarchie/pocketci/plugins/docker"
	"github.com/jtarchie/pocketci/pluginsdk"
)

func main() { pluginsdk.Serve(docker.Provider(), pluginsdk.KeepOnHostExit()) }

// Command pocketci-driver-qemu serves the qemu orchestra driver as a plugin.
package main

import (
	"github.com/jtarchie/pocketci/plugins/qemu"
	"github.com/jtarchie/pocketci/pluginsdk"
)

func main() { pluginsdk.Serve(qemu.Provider()) }

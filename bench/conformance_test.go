package bench

import (
	"testing"

	"github.com/jtarchie/pocketci/host"
	"github.com/jtarchie/pocketci/orchestra"
	"github.com/jtarchie/pocketci/orchestra/conformance"
)

// TestNativePluginConformance runs the conformance suite through the native
// plugin built from this tree, so that the protocol's fast paths (logs and
// stdin on the bulk socket, the exit code in a followed Logs' exit frame)
// are held to the contract end to end.
func TestNativePluginConformance(t *testing.T) {
	h, err := host.New(host.Config{Dirs: []string{pluginDir}, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	p, err := h.Plugin("native")
	if err != nil {
		t.Fatal(err)
	}
	conformance.Run(t, conformance.Options{
		New: func(ns string) (orchestra.Driver, error) { return p.Open(t.Context(), ns, host.OpenOptions{}) },
	})
}

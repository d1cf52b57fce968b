package qemu

import (
	"testing"
	"time"

	"github.com/jtarchie/pocketci/orchestra"
	"github.com/jtarchie/pocketci/orchestra/conformance"
	"github.com/jtarchie/pocketci/pluginsdk/sdktest"
)

// TestConformance runs the shared driver suite in process, with every task
// in the busybox image from the local Docker Engine (chrooted over a
// per-task overlay in the guest). Every case boots its own VM (TCG takes
// seconds), so the timeout is generous.
func TestConformance(t *testing.T) {
	runConformance(t, New)
}

// TestConformanceThroughTheWire runs the suite through the real plugin
// protocol in process (pluginsdk/sdktest): gRPC, the bulk socket and the
// host's client, as between orchestra and pocketci-driver-qemu.
func TestConformanceThroughTheWire(t *testing.T) {
	runConformance(t, sdktest.InitFunc(t, "qemu", New))
}

// runConformance runs the suite on drivers made by newDriver.
func runConformance(t *testing.T, newDriver orchestra.InitFunc) {
	requireQEMU(t)
	requireDocker(t)
	conformance.Run(t, conformance.Options{
		New: func(namespace string) (orchestra.Driver, error) {
			return newDriver(namespace, testLogger(t))
		},
		Image:   "busybox",
		Timeout: 3 * time.Minute,
		Leaks:   Leaks,
	})
}

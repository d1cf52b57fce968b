package qemu

import (
	"os"
	"regexp"
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
	runConformance(t, Provider())
}

// TestConformanceThroughTheWire runs the suite through the real plugin
// protocol in process (pluginsdk/sdktest): gRPC, the bulk socket and the
// host's client, as between orchestra and pocketci-driver-qemu.
func TestConformanceThroughTheWire(t *testing.T) {
	runConformance(t, sdktest.Provider(t, Provider()))
}

// runConformance runs the suite on drivers made by p with the default
// Config. QEMU_CONFORMANCE_RUN selects cases by a regular expression.
func runConformance(t *testing.T, p orchestra.DriverProvider) {
	requireQEMU(t)
	requireDocker(t)
	var run *regexp.Regexp
	if expr := os.Getenv("QEMU_CONFORMANCE_RUN"); expr != "" {
		run = regexp.MustCompile(expr)
	}
	conformance.Run(t, conformance.Options{
		New: func(namespace string) (orchestra.Driver, error) {
			return p.NewDriver(t.Context(), namespace, nil, testLogger(t))
		},
		Image:   "busybox",
		Timeout: 3 * time.Minute,
		Leaks:   Leaks,
		Run:     run,
	})
}

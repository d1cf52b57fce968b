package ctxdriver_test

import (
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/jtarchie/pocketci/host"
	"github.com/jtarchie/pocketci/orchestra"
	"github.com/jtarchie/pocketci/orchestra/conformance"
	"github.com/jtarchie/pocketci/orchestra/conformance/internal/ctxdriver"
)

func needRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the fixture's PID namespaces need root")
	}
	t.Setenv(ctxdriver.RootEnv, t.TempDir())
}

// TestConformanceInProcess: a driver that binds its tasks to the ctx passes
// the whole suite in process.
func TestConformanceInProcess(t *testing.T) {
	needRoot(t)
	conformance.Run(t, conformance.Options{
		New:     func(ns string) (orchestra.Driver, error) { return ctxdriver.New(ns, nil) },
		Leaks:   ctxdriver.Leaks,
		Timeout: time.Minute,
	})
}

// TestConformanceThroughPlugin: the same driver, built as a plugin binary
// and reached through the host, passes the same suite. It needs the
// plugin's RunContainer ctx to live as long as the caller's (protocol 1.3).
func TestConformanceThroughPlugin(t *testing.T) {
	needRoot(t)
	bin := filepath.Join(t.TempDir(), host.Prefix+ctxdriver.Name)
	build := exec.Command("go", "build", "-o", bin, "./cmd/pocketci-driver-ctxdriver")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build the fixture plugin: %v\n%s", err, out)
	}
	h, err := host.New(host.Config{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Close() })
	p, err := h.Load(bin)
	if err != nil {
		t.Fatal(err)
	}
	conformance.Run(t, conformance.Options{
		New:     func(ns string) (orchestra.Driver, error) { return p.NewDriver(ns, nil) },
		Leaks:   ctxdriver.Leaks,
		Timeout: time.Minute,
	})
}

package qemu

import (
	"context"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/jtarchie/pocketci/orchestra"
	"github.com/jtarchie/pocketci/orchestra/conformance/testkit"
)

// requireQEMU skips the test when qemu or the guest image is missing, or
// fails it when ORCHESTRA_REQUIRE_QEMU=1 says they must be there.
func requireQEMU(t testing.TB) {
	t.Helper()
	reason := ""
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil && os.Getenv(EnvBinary) == "" {
		reason = "qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)"
	} else {
		kernel, initrd := ImagePaths()
		for _, f := range []string{kernel, initrd} {
			if _, err := os.Stat(f); err != nil {
				reason = "guest image missing: " + err.Error() + " (run plugins/qemu/guest/build.sh)"
			}
		}
	}
	if reason == "" {
		return
	}
	if os.Getenv("ORCHESTRA_REQUIRE_QEMU") == "1" {
		t.Fatalf("ORCHESTRA_REQUIRE_QEMU=1 but %s", reason)
	}
	t.Skip(reason)
}

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("QEMU_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// newTestDriver creates a driver in a fresh namespace, closed (and checked
// for leaks) when the test ends.
func newTestDriver(t testing.TB) (*Driver, string) {
	t.Helper()
	ns := "qt-" + orchestra.SafeName(orchestra.PathNameRule, t.Name())
	if len(ns) > 30 {
		ns = ns[:30]
	}
	ns += "-" + time.Now().Format("150405.000000")
	drv, err := New(ns, Config{}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := drv.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
		left, err := Leaks(ns)
		if err != nil {
			t.Errorf("leak probe: %v", err)
		}
		if len(left) > 0 {
			t.Errorf("after Close, namespace %s still has %v", ns, left)
		}
	})
	return drv, ns
}

// runTask runs task to the end and returns its exit code, stdout and stderr.
func runTask(t testing.TB, ctx context.Context, d orchestra.Driver, task orchestra.Task) (int, string, string) {
	t.Helper()
	r := testkit.MustRunToEnd(t, ctx, d, task)
	return r.ExitCode, string(r.Stdout), string(r.Stderr)
}

// taskTimeout bounds the wait for one task, under TCG on a loaded machine.
const taskTimeout = 5 * time.Minute

// fullCapBnd is the bounding set of the guest's own processes (every
// capability the guest kernel has), asked of the guest agent.
func fullCapBnd(t testing.TB, ctx context.Context, d *Driver) string {
	t.Helper()
	if _, err := d.ensureVM(ctx); err != nil { // the VM is up
		t.Fatal(err)
	}
	_, out, _, err := d.vm.run(ctx, "grep CapBnd /proc/self/status | cut -f2")
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(out)
}

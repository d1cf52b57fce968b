package ctxdriver_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jtarchie/pocketci/host"
	"github.com/jtarchie/pocketci/orchestra"
	"github.com/jtarchie/pocketci/orchestra/conformance"
	"github.com/jtarchie/pocketci/orchestra/conformance/internal/ctxdriver"
	"github.com/jtarchie/pocketci/pluginsdk"
	"github.com/jtarchie/pocketci/pluginsdk/sdktest"
)

// servePluginEnv makes the test binary serve the fixture as a plugin: the
// tests install the binary itself as pocketci-driver-ctxdriver, a real
// plugin process reached through go-plugin, with nothing to build.
const servePluginEnv = "CTXDRIVER_TEST_SERVE_PLUGIN"

func TestMain(m *testing.M) {
	if os.Getenv(servePluginEnv) != "" {
		pluginsdk.Serve(ctxdriver.Name, ctxdriver.New)
		return
	}
	os.Exit(m.Run())
}

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the fixture's PID namespaces need root")
	}
	t.Setenv(ctxdriver.RootEnv, t.TempDir())
}

// opener opens drivers of the fixture in one way.
type opener struct {
	name string
	open func(t *testing.T) func(namespace string) (orchestra.Driver, error)
}

// openers are the three ways a caller reaches the fixture: compiled in, as
// a plugin process through the host, and through the SDK's in-process
// harness (the real gRPC server and client).
var openers = []opener{
	{"in process", func(*testing.T) func(string) (orchestra.Driver, error) {
		return func(ns string) (orchestra.Driver, error) { return ctxdriver.New(ns, nil) }
	}},
	{"plugin", pluginOpener},
	{"harness", func(t *testing.T) func(string) (orchestra.Driver, error) {
		init := sdktest.InitFunc(t, ctxdriver.Name, ctxdriver.New)
		return func(ns string) (orchestra.Driver, error) { return init(ns, nil) }
	}},
}

// pluginOpener starts the test binary as the fixture's plugin in a fresh
// host and returns how to open drivers in it.
func pluginOpener(t *testing.T) func(string) (orchestra.Driver, error) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, host.Prefix+ctxdriver.Name)
	if err := os.Link(self, bin); err != nil {
		data, rerr := os.ReadFile(self)
		if rerr != nil {
			t.Fatal(rerr)
		}
		if err := os.WriteFile(bin, data, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv(servePluginEnv, "1")
	h, err := host.New(host.Config{Dirs: []string{dir}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Close() })
	p, err := h.Plugin(ctxdriver.Name)
	if err != nil {
		t.Fatal(err)
	}
	return func(ns string) (orchestra.Driver, error) { return p.NewDriver(ns, nil) }
}

// TestConformance: a driver that binds each task's process to the ctx
// RunContainer got passes the whole suite in process, through a plugin
// process and through the harness. Through the wire that needs the
// plugin's RunContainer ctx to live as long as the caller's (protocol
// 1.3); before, the plugin killed every task as its RunContainer returned.
func TestConformance(t *testing.T) {
	needRoot(t)
	for _, o := range openers {
		t.Run(o.name, func(t *testing.T) {
			conformance.Run(t, conformance.Options{New: o.open(t), Leaks: ctxdriver.Leaks, Timeout: time.Minute})
		})
	}
}

// TestRunContextIsTheCallers: however the driver is reached, the ctx its
// RunContainer gets is the caller's: it outlives the call, ends when the
// caller cancels, and carries the caller's deadline.
func TestRunContextIsTheCallers(t *testing.T) {
	needRoot(t)
	for _, o := range openers {
		t.Run(o.name, func(t *testing.T) {
			d, err := o.open(t)("ctx-callers")
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			runContextIsTheCallers(t, d)
		})
	}
}

func runContextIsTheCallers(t *testing.T, d orchestra.Driver) {
	t.Run("outlives the call", func(t *testing.T) {
		c, err := d.RunContainer(context.Background(), orchestra.Task{ID: "outlives", Command: []string{"sh", "-c", "sleep 0.3; echo ok"}})
		if err != nil {
			t.Fatal(err)
		}
		st := waitFor(t, c, 10*time.Second)
		var out bytes.Buffer
		if err := c.Logs(context.Background(), &out, io.Discard); err != nil {
			t.Fatal(err)
		}
		if st.ExitCode() != 0 || out.String() != "ok\n" {
			t.Fatalf("exit %d, stdout %q: want 0 and ok (the task outlives RunContainer's return)", st.ExitCode(), out.String())
		}
	})

	t.Run("cancelled with the caller", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		c, err := d.RunContainer(ctx, orchestra.Task{ID: "cancelled", Command: []string{"sleep", "30"}})
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond)
		if st, err := c.Status(context.Background()); err != nil || st.IsDone() {
			t.Fatalf("before cancel: %v, %v; want running", st, err)
		}
		cancel()
		if st := waitFor(t, c, 5*time.Second); st.ExitCode() != 137 {
			t.Fatalf("exit %d after the caller cancelled, want 137 (killed with its ctx)", st.ExitCode())
		}
	})

	t.Run("carries the deadline", func(t *testing.T) {
		deadline := time.Now().Add(3 * time.Second) // room for RunContainer on a loaded machine
		ctx, cancel := context.WithDeadline(context.Background(), deadline)
		defer cancel()
		c, err := d.RunContainer(ctx, orchestra.Task{ID: "deadline", Command: []string{"sleep", "30"}, Env: map[string]string{ctxdriver.ReportEnv: "1"}})
		if err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		if err := c.Logs(context.Background(), &out, io.Discard); err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprintf("deadline %d\n", deadline.UnixNano()); out.String() != want {
			t.Fatalf("the driver saw %q, want %q", out.String(), want)
		}
		st := waitFor(t, c, 5*time.Second)
		if st.ExitCode() != 137 || time.Now().Before(deadline) {
			t.Fatalf("exit %d at %v: want 137 once the deadline passed", st.ExitCode(), time.Until(deadline))
		}
	})
}

func waitFor(t *testing.T, c orchestra.Container, limit time.Duration) orchestra.ContainerStatus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	st, err := conformance.WaitDone(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// TestLargeTaskReachesThePlugin: a 10 MiB task crosses go-plugin's gRPC
// connection (whose default limit is 4 MiB) and reaches the driver, which
// refuses it for its own reason (the kernel's limit on one environment
// string), not gRPC's size error.
func TestLargeTaskReachesThePlugin(t *testing.T) {
	needRoot(t)
	d, err := pluginOpener(t)("large-task")
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	_, err = d.RunContainer(context.Background(), orchestra.Task{ID: "large", Command: []string{"true"}, Env: map[string]string{"BIG": strings.Repeat("x", 10<<20)}})
	if err == nil || !strings.Contains(err.Error(), "argument list too long") {
		t.Fatalf("RunContainer = %v, want the driver's exec error (E2BIG), which means the task reached it", err)
	}
}

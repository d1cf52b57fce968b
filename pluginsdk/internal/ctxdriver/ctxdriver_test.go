package ctxdriver_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jtarchie/pocketci/orchestra"
	"github.com/jtarchie/pocketci/orchestra/conformance"
	"github.com/jtarchie/pocketci/orchestra/conformance/testkit"
	"github.com/jtarchie/pocketci/pluginsdk"
	"github.com/jtarchie/pocketci/pluginsdk/internal/ctxdriver"
	"github.com/jtarchie/pocketci/pluginsdk/sdktest"
)

// servePluginEnv makes the test binary serve the fixture as a plugin: the
// tests install the binary itself as pocketci-driver-ctxdriver, a real
// plugin process reached through go-plugin, with nothing to build.
const servePluginEnv = "CTXDRIVER_TEST_SERVE_PLUGIN"

func TestMain(m *testing.M) {
	if os.Getenv(servePluginEnv) != "" {
		pluginsdk.Serve(ctxdriver.Provider())
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

// openers are the ways a caller reaches the fixture: compiled in, through
// the SDK's in-process harness (the real gRPC server and client), and as a
// plugin process through the host (added by plugin_test.go).
var openers = []opener{
	{"in process", func(t *testing.T) func(string) (orchestra.Driver, error) {
		p := ctxdriver.Provider()
		return func(ns string) (orchestra.Driver, error) { return p.NewDriver(t.Context(), ns, nil, nil) }
	}},
	{"harness", func(t *testing.T) func(string) (orchestra.Driver, error) {
		p := sdktest.Provider(t, ctxdriver.Provider())
		return func(ns string) (orchestra.Driver, error) { return p.NewDriver(t.Context(), ns, nil, nil) }
	}},
}

// TestConformance: a driver that binds each task's process to the ctx
// RunContainer got passes the whole suite in process, through the harness
// and through a plugin process. Through the wire that needs the plugin's
// RunContainer ctx to live as long as the caller's (protocol 1.3); before,
// the plugin killed every task as its RunContainer returned. The fixture
// does not find another instance's tasks (errors.ErrUnsupported): "container
// id finds it again" is skipped.
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
		if err := c.Logs(context.Background(), &out, io.Discard, false); err != nil {
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
		if err := c.Logs(context.Background(), &out, io.Discard, false); err != nil {
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

// TestSecondInstance: a second instance of the namespace neither finds nor
// reruns the first one's task: it says it cannot (errors.ErrUnsupported),
// and an ID nobody ran is not found.
func TestSecondInstance(t *testing.T) {
	needRoot(t)
	for _, o := range openers {
		t.Run(o.name, func(t *testing.T) {
			open := o.open(t)
			first, err := open("second")
			if err != nil {
				t.Fatal(err)
			}
			defer first.Close()
			task := orchestra.Task{ID: "t", Command: []string{"echo", "once"}}
			c, err := first.RunContainer(t.Context(), task)
			if err != nil {
				t.Fatal(err)
			}
			waitFor(t, c, 10*time.Second)
			second, err := open("second")
			if err != nil {
				t.Fatal(err)
			}
			defer second.Close()
			if _, err := second.GetContainer(t.Context(), c.ID()); !errors.Is(err, errors.ErrUnsupported) {
				t.Fatalf("GetContainer of the first instance's task: %v, want errors.ErrUnsupported", err)
			}
			if _, err := second.RunContainer(t.Context(), task); !errors.Is(err, errors.ErrUnsupported) {
				t.Fatalf("RunContainer of the first instance's task ID: %v, want errors.ErrUnsupported", err)
			}
			if _, err := second.GetContainer(t.Context(), "never"); !errors.Is(err, orchestra.ErrContainerNotFound) {
				t.Fatalf("GetContainer of an unknown ID: %v, want orchestra.ErrContainerNotFound", err)
			}
		})
	}
}

// TestRefusedFields: a field the fixture cannot apply is refused, naming it.
func TestRefusedFields(t *testing.T) {
	needRoot(t)
	d, err := ctxdriver.Provider().NewDriver(t.Context(), "refused", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	tests := []struct {
		name, field string
		task        orchestra.Task
	}{
		{"user", "User", orchestra.Task{ID: "u", User: "nobody", Command: []string{"true"}}},
		{"one place twice", "Mounts[1].Path", orchestra.Task{ID: "m", Command: []string{"true"},
			Mounts: orchestra.Mounts{{Name: "a", Path: "/a"}, {Name: "b", Path: "a"}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := d.RunContainer(t.Context(), tt.task)
			if !errors.Is(err, orchestra.ErrInvalidTask) || !strings.Contains(err.Error(), tt.field) {
				t.Fatalf("RunContainer: %v, want ErrInvalidTask naming %s", err, tt.field)
			}
		})
	}
	if _, err := ctxdriver.Provider().UnmarshalConfig([]byte(`{"root": "relative-secret"}`)); !errors.Is(err, orchestra.ErrInvalidConfig) || strings.Contains(err.Error(), "secret") {
		t.Fatalf("a relative root: %v, want ErrInvalidConfig without the value", err)
	}
}

func waitFor(t *testing.T, c orchestra.Container, limit time.Duration) orchestra.ContainerStatus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	st, err := testkit.WaitDone(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

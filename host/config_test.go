package host

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jtarchie/pocketci/orchestra"
)

// TestConfigPerInstance: two native drivers opened in one plugin process
// with different configs (native's "root") work side by side, each task
// and volume under its own driver's root.
func TestConfigPerInstance(t *testing.T) {
	_, p, _ := hostileHost(t, "", Config{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	roots := []string{filepath.Join(t.TempDir(), "root-a"), filepath.Join(t.TempDir(), "root-b")}
	var pids []int
	for i, root := range roots {
		d, err := p.Open(ctx, "per-instance", OpenOptions{Config: []byte(fmt.Sprintf(`{"root":%q}`, root))})
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		pids = append(pids, p.PID())
		c, err := d.RunContainer(ctx, orchestra.Task{ID: "where", Command: []string{"pwd"},
			Mounts: orchestra.Mounts{{Name: "data", Path: "data"}}})
		if err != nil {
			t.Fatal(err)
		}
		if st := waitStatus(t, c); st.ExitCode() != 0 {
			t.Fatalf("driver %d: exit %d", i, st.ExitCode())
		}
		if out := stdoutOf(t, c); !strings.HasPrefix(out, root+"/") {
			t.Fatalf("driver %d (root %s): the task ran in %q", i, root, out)
		}
		v, err := d.CreateVolume(ctx, "data", 0)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(v.Path(), root+"/") {
			t.Fatalf("driver %d (root %s): volume at %q", i, root, v.Path())
		}
	}
	if pids[0] != pids[1] {
		t.Fatalf("the two drivers run in plugin processes %v, want one", pids)
	}
}

func stdoutOf(t *testing.T, c orchestra.Container) string {
	t.Helper()
	var out strings.Builder
	if err := c.Logs(context.Background(), &out, &out, false); err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(out.String())
}

// marker stands for a secret in a driver config.
const marker = "s3cr3t-marker-XYZ"

// TestConfigRefusedAndSecret: a config with an unknown field is refused at
// Open, by Plugin.CheckConfig and by the provider's UnmarshalConfig, with an
// error naming the field that is orchestra.ErrInvalidConfig across the
// wire; and no string of a config (an unknown field's value, a root
// directory's path) appears in an error or in any record of the host's log,
// even when the plugin logs it, fails on it, or dies and is restarted.
func TestConfigRefusedAndSecret(t *testing.T) {
	_, p, logs := hostileHost(t, "", Config{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	unknown := []byte(fmt.Sprintf(`{"root":%q,"token":%q}`, t.TempDir(), marker))
	refusals := map[string]error{
		"CheckConfig": p.CheckConfig(ctx, unknown),
	}
	_, refusals["Open"] = p.Open(ctx, "secret", OpenOptions{Config: unknown})
	_, refusals["UnmarshalConfig"] = p.Provider().UnmarshalConfig(unknown)
	for call, err := range refusals {
		if !errors.Is(err, orchestra.ErrInvalidConfig) || !strings.Contains(err.Error(), `"token"`) {
			t.Errorf("%s of a config with an unknown field: %v; want orchestra.ErrInvalidConfig naming \"token\"", call, err)
		}
		noMarker(t, call+" error", fmt.Sprint(err))
		t.Logf("%s: %v", call, err)
	}

	// Refused without quoting the value: a relative root, and one that
	// cannot be created.
	for _, root := range []string{marker, "/proc/" + marker} {
		_, err := p.Open(ctx, "secret", OpenOptions{Config: []byte(fmt.Sprintf(`{"root":%q}`, root))})
		if err == nil {
			t.Fatalf("Open with root %q: no error", root)
		}
		noMarker(t, "Open error", err.Error())
		t.Logf("Open with a bad root: %v", err)
	}

	// A root whose path holds the marker works, and stays out of the logs
	// through a crash of the plugin and its restart.
	root := filepath.Join(t.TempDir(), marker+"-root")
	d, err := p.Open(ctx, "secret", OpenOptions{Config: []byte(fmt.Sprintf(`{"root":%q}`, root))})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	runQuiet(t, d, "before")
	pid := p.PID()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitGone(t, pid, 5*time.Second)
	for p.State() != StateExited {
		time.Sleep(5 * time.Millisecond)
	}
	runQuiet(t, d, "after") // reopens the namespace, with its config, in a new process
	c, err := d.RunContainer(ctx, orchestra.Task{ID: "bad", Command: []string{"true"}, Mounts: orchestra.Mounts{{Name: "x", Path: "../escape"}}})
	if err == nil {
		_ = c.Cleanup(ctx)
	} else {
		noMarker(t, "RunContainer error", err.Error())
	}
	if err := d.Close(); err != nil {
		noMarker(t, "Close error", err.Error())
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "plugin=hostile") || !strings.Contains(logs.String(), "level=DEBUG") {
		t.Fatalf("the plugin's debug logs did not reach the host's log:\n%s", logs)
	}
	noMarker(t, "the host's log", logs.String())
	t.Logf("config strings redacted %d times in the host's log", strings.Count(logs.String(), "[redacted]"))
}

// runQuiet runs a task that prints nothing through d.
func runQuiet(t *testing.T, d orchestra.Driver, id string) {
	t.Helper()
	c, err := d.RunContainer(context.Background(), orchestra.Task{ID: id, Command: []string{"true"}})
	if err != nil {
		noMarker(t, "RunContainer error", err.Error())
		t.Fatal(err)
	}
	if st := waitStatus(t, c); st.ExitCode() != 0 {
		t.Fatalf("task %s: exit %d", id, st.ExitCode())
	}
}

func noMarker(t *testing.T, where, s string) {
	t.Helper()
	if strings.Contains(s, marker) {
		t.Errorf("a config string is in %s:\n%s", where, s)
	}
}

package host

import (
	"bytes"
	"context"
	"errors"
	"syscall"
	"testing"
	"time"

	"github.com/jtarchie/pocketci/orchestra"
)

// TestContainerIDAfterPluginRestart: a container's ID finds it again after
// its plugin process was killed and started again: through a second driver
// opened in the namespace after the restart, and through the handle held
// since before it. An ID nobody gave is still not found.
func TestContainerIDAfterPluginRestart(t *testing.T) {
	h, p, _ := hostileHost(t, "", Config{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	first, err := p.Open(ctx, "restart-ids", OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c, err := first.RunContainer(ctx, orchestra.Task{ID: "kept", Command: []string{"sh", "-c", "echo out; echo err >&2; exit 4"}})
	if err != nil {
		t.Fatal(err)
	}
	if st := waitStatus(t, c); st.ExitCode() != 4 {
		t.Fatalf("exit %d, want 4", st.ExitCode())
	}
	id := c.ID()

	pid := p.PID()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitGone(t, pid, 5*time.Second)
	for p.State() != StateExited {
		time.Sleep(5 * time.Millisecond)
	}

	second, err := p.Open(ctx, "restart-ids", OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if p.PID() == pid || p.PID() == 0 {
		t.Fatalf("the plugin was not restarted (pid %d, before %d)", p.PID(), pid)
	}
	found, err := second.GetContainer(ctx, id)
	if err != nil {
		t.Fatalf("GetContainer(%q) through a driver opened after the restart: %v", id, err)
	}
	if found.ID() != id {
		t.Fatalf("found container's ID %q, want %q", found.ID(), id)
	}
	for name, handle := range map[string]orchestra.Container{"found again": found, "held since before": c} {
		st, err := handle.Status(ctx)
		if err != nil || !st.IsDone() || st.ExitCode() != 4 {
			t.Fatalf("Status of the container %s: %v, %v; want done with exit 4", name, st, err)
		}
		for _, follow := range []bool{false, true} {
			var out, errOut bytes.Buffer
			if err := handle.Logs(ctx, &out, &errOut, follow); err != nil || out.String() != "out\n" || errOut.String() != "err\n" {
				t.Fatalf("Logs(follow=%v) of the container %s: %q, %q, %v", follow, name, out.String(), errOut.String(), err)
			}
		}
	}
	if _, err := second.GetContainer(ctx, "never-ran"); !errors.Is(err, orchestra.ErrContainerNotFound) {
		t.Fatalf("GetContainer of an unknown ID after the restart: %v, want orchestra.ErrContainerNotFound", err)
	}
	if err := found.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := second.GetContainer(ctx, id); !errors.Is(err, orchestra.ErrContainerNotFound) {
		t.Fatalf("GetContainer after Cleanup: %v, want orchestra.ErrContainerNotFound", err)
	}
	for _, d := range []orchestra.Driver{second, first} {
		if err := d.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
}

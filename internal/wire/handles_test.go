package wire

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/jtarchie/pocketci/orchestra"
	"github.com/jtarchie/pocketci/proto/driverv1"
)

// TestHandleTable: a handle names one container ID until it is dropped;
// serving the container again gives a new entry under the same handle and
// leaves the entry handed out before as it was.
func TestHandleTable(t *testing.T) {
	inst := newInstance(newFakeDriver("ns"), "ns", false)
	a := func() *fakeContainer { return &fakeContainer{task: orchestra.Task{ID: "a"}} }
	first := inst.serve(a(), "a", nil)
	second := inst.serve(a(), "", nil)
	other := inst.serve(&fakeContainer{task: orchestra.Task{ID: "b"}}, "b", nil)
	if first.handle != second.handle || first == second || first.container == second.container {
		t.Fatalf("same container: handles %d and %d, entries equal %v: want one handle, a new entry", first.handle, second.handle, first == second)
	}
	if second.taskID != "a" {
		t.Fatalf("the container found again lost its task ID: %q", second.taskID)
	}
	if other.handle == first.handle {
		t.Fatal("two container IDs share a handle")
	}
	got, err := inst.lookup(&driverv1.ContainerRef{Container: first.handle})
	if err != nil || got != second {
		t.Fatalf("lookup = %v, %v; want the newest entry", got, err)
	}
	inst.drop(first) // a stale entry: the newer one stays
	if _, err := inst.lookup(&driverv1.ContainerRef{Container: first.handle}); err != nil {
		t.Fatalf("dropping a stale entry removed the current one: %v", err)
	}
	inst.drop(second)
	inst.drop(other)
	if _, err := inst.lookup(&driverv1.ContainerRef{Container: first.handle, TaskId: "a"}); err == nil || !strings.Contains(err.Error(), `task "a"`) {
		t.Fatalf("lookup after drop: %v, want not found naming the task", err)
	}
	v1 := inst.addVolume(fakeVolume("v"))
	v2 := inst.addVolume(fakeVolume("v"))
	if v1.id != v2.id {
		t.Fatal("the same volume name got two handles")
	}
	inst.dropVolume(v2)
	if c, tasks, vols := inst.size(); c+tasks+vols != 0 {
		t.Fatalf("table not empty after every drop: %d containers, %d task IDs, %d volume entries", c, tasks, vols)
	}
}

// TestHandlesDroppedOnCleanup: through the wire, Cleanup, CleanupVolume and
// Close leave nothing in the plugin's tables; Cleanup and volume Cleanup
// stay idempotent for the caller.
func TestHandlesDroppedOnCleanup(t *testing.T) {
	c, srv := connectServer(t)
	d, err := c.Open(context.Background(), "drops", OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i := range 50 {
		ct, err := d.RunContainer(ctx, orchestra.Task{ID: fmt.Sprint("t", i), Command: []string{"true"}})
		if err != nil {
			t.Fatal(err)
		}
		v, err := d.CreateVolume(ctx, fmt.Sprint("v", i%5), 0)
		if err != nil {
			t.Fatal(err)
		}
		for range 2 {
			if err := ct.Cleanup(ctx); err != nil {
				t.Fatalf("Cleanup: %v", err)
			}
			if err := v.Cleanup(ctx); err != nil {
				t.Fatalf("volume Cleanup: %v", err)
			}
		}
	}
	srv.mu.Lock()
	for _, inst := range srv.drivers {
		if n, tasks, vols := inst.size(); n+tasks+vols != 0 {
			t.Errorf("after 50 tasks cleaned up: %d containers, %d task IDs, %d volume entries kept", n, tasks, vols)
		}
	}
	srv.mu.Unlock()
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if len(srv.drivers) != 0 {
		t.Fatalf("%d driver instances kept after Close", len(srv.drivers))
	}
}

// TestEphemeralNamespacesCloseWithTheirHost: when the host is gone, a plugin
// that keeps its resources (KeepOnHostExit) still closes the namespaces
// opened as ephemeral, and only those.
func TestEphemeralNamespacesCloseWithTheirHost(t *testing.T) {
	c, srv := connectServer(t)
	ctx := context.Background()
	if _, err := c.Open(ctx, "kept", OpenOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Open(ctx, "throwaway", OpenOptions{Ephemeral: true}); err != nil {
		t.Fatal(err)
	}
	srv.mu.Lock()
	byNamespace := map[string]*fakeDriver{}
	for _, inst := range srv.drivers {
		byNamespace[inst.namespace] = inst.driver.(*fakeDriver)
	}
	srv.mu.Unlock()
	srv.CloseEphemeral() // what watchHost does under KeepOnHostExit
	closed := func(ns string) int {
		d := byNamespace[ns]
		d.mu.Lock()
		defer d.mu.Unlock()
		return d.closed
	}
	if closed("throwaway") != 1 || closed("kept") != 0 {
		t.Fatalf("closed: throwaway %d times, kept %d times; want 1 and 0", closed("throwaway"), closed("kept"))
	}
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if len(srv.drivers) != 1 {
		t.Fatalf("%d drivers open, want the kept one", len(srv.drivers))
	}
}

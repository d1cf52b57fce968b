package wire

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/jtarchie/pocketci/orchestra"
	"github.com/jtarchie/pocketci/proto/driverv1"
)

// The handle table: the numbers the plugin gives the host for the
// containers, volumes and sandboxes of each driver instance. An entry is
// immutable once handed out (a call that holds it reads it without a lock);
// serving the same container (by its ID) or volume (by its name) again
// replaces the entry under the same number. Entries are dropped when their
// value is cleaned up and with their instance, so a plugin that runs for
// months keeps nothing per finished task.

// instance is one driver opened for a namespace, with the handles given out
// for its containers and volumes.
type instance struct {
	driver    orchestra.Driver
	namespace string
	// implements lists the optional interfaces driver implements.
	implements []string
	// ephemeral namespaces are closed when the host dies, whatever
	// KeepOnHostExit says.
	ephemeral bool

	mu         sync.Mutex
	containers table[*served]
	volumes    table[*servedVolume]
	sandboxes  table[orchestra.Sandbox]
}

func newInstance(driver orchestra.Driver, namespace string, ephemeral bool) *instance {
	return &instance{driver: driver, namespace: namespace, implements: implementsOf(driver), ephemeral: ephemeral}
}

// table gives out handles for one kind of value, in order; a value put
// again under the same key keeps its handle. The instance's lock guards it.
type table[T comparable] struct {
	next  uint64
	byNum map[uint64]T
	byKey map[string]uint64
}

// get is the entry for handle n.
func (t *table[T]) get(n uint64) (T, bool) {
	v, ok := t.byNum[n]
	return v, ok
}

// put stores v under key's handle, or a new one for a new or empty key.
func (t *table[T]) put(key string, v T) uint64 {
	if t.byNum == nil {
		t.byNum, t.byKey = map[uint64]T{}, map[string]uint64{}
	}
	n, seen := t.byKey[key]
	if !seen || key == "" {
		t.next++
		n = t.next
	}
	if key != "" {
		t.byKey[key] = n
	}
	t.byNum[n] = v
	return n
}

// drop forgets v, the entry of handle n and key, unless another entry took
// its place.
func (t *table[T]) drop(n uint64, key string, v T) {
	if t.byNum[n] == v {
		delete(t.byNum, n)
		if t.byKey[key] == n {
			delete(t.byKey, key)
		}
	}
}

// served is a container handed to the host, with the stdin feeding it.
type served struct {
	handle    uint64
	id        string // Container.ID
	taskID    string // set when RunContainer started it
	container orchestra.Container
	stdin     *stdinPipe // nil without stdin
}

// servedVolume is a volume handed to the host.
type servedVolume struct {
	id     uint64
	volume orchestra.Volume
}

// serve gives container a handle and returns the entry. A container seen
// before (the same ID: RunContainer of a task that already ran, or
// GetContainer) keeps its handle and its first stdin: a stdin meant for a
// container that already existed is closed, since the driver did not run the
// command again and nothing will read it.
func (inst *instance) serve(container orchestra.Container, taskID string, pipe *stdinPipe) *served {
	inst.mu.Lock()
	defer inst.mu.Unlock()
	c := &served{id: container.ID(), taskID: taskID, container: container, stdin: pipe}
	if n, seen := inst.containers.byKey[c.id]; seen && c.id != "" {
		old := inst.containers.byNum[n]
		if pipe != nil && pipe != old.stdin {
			pipe.close(fmt.Errorf("task %q already ran: stdin not read", taskID))
		}
		c.stdin = old.stdin
		if c.taskID == "" {
			c.taskID = old.taskID
		}
	}
	c.handle = inst.containers.put(c.id, c)
	return c
}

// response is what RunContainer and GetContainer answer for c.
func (c *served) response() *driverv1.RunContainerResponse {
	return &driverv1.RunContainerResponse{
		Container:   &driverv1.ContainerRef{Container: c.handle, TaskId: c.taskID},
		LogFollower: true,
		ContainerId: c.id,
	}
}

// lookup returns the entry of a container handle.
func (inst *instance) lookup(ref *driverv1.ContainerRef) (*served, error) {
	inst.mu.Lock()
	defer inst.mu.Unlock()
	c, ok := inst.containers.get(ref.GetContainer())
	if !ok {
		return nil, fmt.Errorf("container handle %d (task %q): %w", ref.GetContainer(), ref.GetTaskId(), orchestra.ErrContainerNotFound)
	}
	return c, nil
}

// drop forgets c, once cleaned up.
func (inst *instance) drop(c *served) {
	inst.mu.Lock()
	defer inst.mu.Unlock()
	inst.containers.drop(c.handle, c.id, c)
}

// addVolume gives vol a handle; the same name keeps its handle.
func (inst *instance) addVolume(vol orchestra.Volume) *servedVolume {
	inst.mu.Lock()
	defer inst.mu.Unlock()
	v := &servedVolume{volume: vol}
	v.id = inst.volumes.put(vol.Name(), v)
	return v
}

func (inst *instance) lookupVolume(ref *driverv1.VolumeRef) (*servedVolume, error) {
	inst.mu.Lock()
	defer inst.mu.Unlock()
	v, ok := inst.volumes.get(ref.GetVolume())
	if !ok {
		return nil, fmt.Errorf("volume handle %d (%q): %w", ref.GetVolume(), ref.GetName(), orchestra.ErrVolumeNotFound)
	}
	return v, nil
}

// dropVolume forgets v, once cleaned up.
func (inst *instance) dropVolume(v *servedVolume) {
	inst.mu.Lock()
	defer inst.mu.Unlock()
	inst.volumes.drop(v.id, v.volume.Name(), v)
}

// addSandbox gives sb a handle.
func (inst *instance) addSandbox(sb orchestra.Sandbox) uint64 {
	inst.mu.Lock()
	defer inst.mu.Unlock()
	return inst.sandboxes.put("", sb)
}

func (inst *instance) sandbox(id uint64) (orchestra.Sandbox, bool) {
	inst.mu.Lock()
	defer inst.mu.Unlock()
	return inst.sandboxes.get(id)
}

func (inst *instance) dropSandbox(id uint64) {
	inst.mu.Lock()
	defer inst.mu.Unlock()
	delete(inst.sandboxes.byNum, id)
}

// close closes every stdin still open, cleans up every sandbox the host did
// not, closes the driver, and empties the table.
func (inst *instance) close() error {
	inst.mu.Lock()
	containers, sandboxes := inst.containers.byNum, inst.sandboxes.byNum
	inst.containers.byNum, inst.containers.byKey = nil, nil
	inst.volumes.byNum, inst.volumes.byKey = nil, nil
	inst.sandboxes.byNum = nil
	inst.mu.Unlock()
	for _, c := range containers {
		if c.stdin != nil {
			c.stdin.close(orchestra.ErrClosed)
		}
	}
	var errs []error
	for _, sb := range sandboxes {
		ctx, cancel := context.WithTimeout(context.Background(), sandboxCleanupTimeout)
		if err := sb.Cleanup(ctx); err != nil {
			errs = append(errs, fmt.Errorf("clean up sandbox %q: %w", sb.ID(), err))
		}
		cancel()
	}
	return errors.Join(append(errs, inst.driver.Close())...)
}

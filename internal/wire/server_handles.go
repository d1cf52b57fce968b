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
// containers and volumes of each driver instance. An entry is immutable once
// handed out (a call that holds it reads it without a lock); serving the
// same container (by its ID) again replaces the entry. Entries are dropped when their
// container or volume is cleaned up and with their instance, so a plugin
// that runs for months keeps nothing per finished task.

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

	mu            sync.Mutex
	nextContainer uint64
	nextVolume    uint64
	containers    map[uint64]*served
	byID          map[string]uint64
	volumes       map[uint64]*servedVolume
	byVolume      map[string]uint64
	nextSandbox   uint64
	sandboxes     map[uint64]orchestra.Sandbox
}

func newInstance(driver orchestra.Driver, namespace string, ephemeral bool) *instance {
	return &instance{
		driver:     driver,
		namespace:  namespace,
		implements: implementsOf(driver),
		ephemeral:  ephemeral,
		containers: map[uint64]*served{},
		byID:       map[string]uint64{},
		volumes:    map[uint64]*servedVolume{},
		byVolume:   map[string]uint64{},
		sandboxes:  map[uint64]orchestra.Sandbox{},
	}
}

// served is a container handed to the host, with the stdin feeding it. It
// is never changed once in the table.
type served struct {
	handle    uint64
	id        string // Container.ID
	taskID    string // set when RunContainer started it
	container orchestra.Container
	stdin     *stdinPipe // nil without stdin
}

// servedVolume is a volume handed to the host; never changed once in the
// table.
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
	if handle, seen := inst.byID[c.id]; seen && c.id != "" {
		old := inst.containers[handle]
		if pipe != nil && pipe != old.stdin {
			pipe.close(fmt.Errorf("task %q already ran: stdin not read", taskID))
		}
		c.handle, c.stdin = handle, old.stdin
		if c.taskID == "" {
			c.taskID = old.taskID
		}
		inst.containers[handle] = c
		return c
	}
	inst.nextContainer++
	c.handle = inst.nextContainer
	inst.containers[c.handle] = c
	if c.id != "" {
		inst.byID[c.id] = c.handle
	}
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
	c, ok := inst.containers[ref.GetContainer()]
	if !ok {
		return nil, fmt.Errorf("container handle %d (task %q): %w", ref.GetContainer(), ref.GetTaskId(), orchestra.ErrContainerNotFound)
	}
	return c, nil
}

// drop forgets c, once cleaned up. A newer entry for the same handle (the
// container served again meanwhile) stays.
func (inst *instance) drop(c *served) {
	inst.mu.Lock()
	defer inst.mu.Unlock()
	if inst.containers[c.handle] == c {
		delete(inst.containers, c.handle)
		if inst.byID[c.id] == c.handle {
			delete(inst.byID, c.id)
		}
	}
}

// addVolume gives vol a handle; the same name keeps its handle.
func (inst *instance) addVolume(vol orchestra.Volume) *servedVolume {
	inst.mu.Lock()
	defer inst.mu.Unlock()
	id, ok := inst.byVolume[vol.Name()]
	if !ok {
		inst.nextVolume++
		id = inst.nextVolume
		inst.byVolume[vol.Name()] = id
	}
	v := &servedVolume{id: id, volume: vol}
	inst.volumes[id] = v
	return v
}

func (inst *instance) lookupVolume(ref *driverv1.VolumeRef) (*servedVolume, error) {
	inst.mu.Lock()
	defer inst.mu.Unlock()
	v, ok := inst.volumes[ref.GetVolume()]
	if !ok {
		return nil, fmt.Errorf("volume handle %d (%q): %w", ref.GetVolume(), ref.GetName(), orchestra.ErrVolumeNotFound)
	}
	return v, nil
}

// dropVolume forgets v, once cleaned up.
func (inst *instance) dropVolume(v *servedVolume) {
	inst.mu.Lock()
	defer inst.mu.Unlock()
	if inst.volumes[v.id] == v {
		delete(inst.volumes, v.id)
		delete(inst.byVolume, v.volume.Name())
	}
}

// addSandbox gives sb a handle.
func (inst *instance) addSandbox(sb orchestra.Sandbox) uint64 {
	inst.mu.Lock()
	defer inst.mu.Unlock()
	inst.nextSandbox++
	inst.sandboxes[inst.nextSandbox] = sb
	return inst.nextSandbox
}

func (inst *instance) sandbox(id uint64) (orchestra.Sandbox, bool) {
	inst.mu.Lock()
	defer inst.mu.Unlock()
	sb, ok := inst.sandboxes[id]
	return sb, ok
}

func (inst *instance) dropSandbox(id uint64) {
	inst.mu.Lock()
	defer inst.mu.Unlock()
	delete(inst.sandboxes, id)
}

// close closes every stdin still open, cleans up every sandbox the host did
// not, closes the driver, and empties the table.
func (inst *instance) close() error {
	inst.mu.Lock()
	containers, sandboxes := inst.containers, inst.sandboxes
	inst.containers, inst.byID = map[uint64]*served{}, map[string]uint64{}
	inst.volumes, inst.byVolume = map[uint64]*servedVolume{}, map[string]uint64{}
	inst.sandboxes = map[uint64]orchestra.Sandbox{}
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

// size is the number of entries, for tests.
func (inst *instance) size() (containers, tasks, volumes int) {
	inst.mu.Lock()
	defer inst.mu.Unlock()
	return len(inst.containers), len(inst.byID), len(inst.volumes) + len(inst.byVolume)
}

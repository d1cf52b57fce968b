// Package qemu is an orchestra driver that runs every task of a namespace in
// one lightweight QEMU virtual machine (microvm, PVH-booted Debian kernel,
// busybox initramfs), driven through the QEMU Guest Agent. Task output, stdin
// and volumes travel through a 9p share of a private host directory. See
// README.md for settings and the guest image.
package qemu

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/jtarchie/pocketci/orchestra"
)

// driverName is the name the driver registers under.
const driverName = "qemu"

func init() { orchestra.Add(driverName, New) }

// Driver runs the tasks of one namespace in one VM, booted on first use.
type Driver struct {
	namespace string
	logger    *slog.Logger

	bootSem chan struct{} // held by the goroutine booting the VM
	// closing ends when Close starts, cancelling a boot in progress.
	closing     context.Context
	closeCancel context.CancelFunc

	mu         sync.Mutex
	closed     bool
	dir        string // private directory, made on the first boot; holds the share
	vm         *vm
	containers map[string]*Container // by task ID
	freeSlots  []int                 // guest slots of finished tasks, for reuse
	nextSlot   int                   // slots handed out so far on d.vm
	volumes    map[string]*Volume    // by name
	bg         sync.WaitGroup        // pollers and stdin feeders
}

var (
	_ orchestra.Driver          = (*Driver)(nil)
	_ orchestra.ContainerFinder = (*Driver)(nil)
)

// New creates a driver for namespace. It boots nothing: the VM starts on the
// first RunContainer or CreateVolume.
func New(namespace string, logger *slog.Logger) (orchestra.Driver, error) {
	if err := orchestra.ValidateNamespace(namespace); err != nil {
		return nil, fmt.Errorf("qemu driver: %w", err)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	closing, closeCancel := context.WithCancel(context.Background())
	return &Driver{
		closing:     closing,
		closeCancel: closeCancel,
		namespace:   namespace,
		logger:      logger.With("driver", driverName, "namespace", namespace),
		bootSem:     make(chan struct{}, 1),
		containers:  map[string]*Container{},
		volumes:     map[string]*Volume{},
	}, nil
}

// Name returns "qemu".
func (d *Driver) Name() string { return driverName }

// ensureVM returns the running VM, booting it when there is none. Concurrent
// callers share one boot; a failed boot is returned to its caller and the
// next call tries again.
func (d *Driver) ensureVM(ctx context.Context) (*vm, error) {
	for {
		d.mu.Lock()
		if d.closed {
			d.mu.Unlock()
			return nil, fmt.Errorf("qemu driver %s: %w", d.namespace, orchestra.ErrClosed)
		}
		if v := d.vm; v != nil {
			d.mu.Unlock()
			if v.alive() {
				return v, nil
			}
			d.replaceDead(v)
			continue
		}
		d.mu.Unlock()

		select {
		case d.bootSem <- struct{}{}:
		case <-ctx.Done():
			return nil, fmt.Errorf("qemu driver %s: waiting for the VM to boot: %w", d.namespace, ctx.Err())
		}
		d.mu.Lock()
		booted := d.vm != nil || d.closed
		d.mu.Unlock()
		if booted { // another caller booted it (or closed the driver) meanwhile
			<-d.bootSem
			continue
		}
		dir, err := d.privateDir()
		if err != nil {
			<-d.bootSem
			return nil, fmt.Errorf("qemu driver %s: %w", d.namespace, err)
		}
		bootCtx, cancel := context.WithCancel(ctx)
		stop := context.AfterFunc(d.closing, cancel)
		v, err := bootVM(bootCtx, d.namespace, dir, d.logger)
		stop()
		cancel()
		if err != nil {
			if d.closing.Err() != nil {
				err = fmt.Errorf("%w (%w)", err, orchestra.ErrClosed)
			}
			<-d.bootSem
			return nil, fmt.Errorf("qemu driver %s: %w", d.namespace, err)
		}
		d.mu.Lock()
		if d.closed {
			d.mu.Unlock()
			<-d.bootSem
			v.stop()
			return nil, fmt.Errorf("qemu driver %s: %w", d.namespace, orchestra.ErrClosed)
		}
		d.vm = v
		d.mu.Unlock()
		<-d.bootSem
		return v, nil
	}
}

// takeSlot gives a starting task a guest slot (its output FIFOs and cgroup
// in the guest), reusing one of a finished task first, so the guest never
// holds more slots than tasks ever ran at once.
func (d *Driver) takeSlot() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	if n := len(d.freeSlots); n > 0 {
		s := d.freeSlots[n-1]
		d.freeSlots = d.freeSlots[:n-1]
		return s
	}
	d.nextSlot++
	return d.nextSlot
}

// releaseSlot returns the slot of a task that ended on v (slots of a VM
// that died are not reused: the next VM starts over).
func (d *Driver) releaseSlot(v *vm, slot int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if slot != 0 && d.vm == v {
		d.freeSlots = append(d.freeSlots, slot)
	}
}

// replaceDead forgets a VM whose qemu exited without Close (killed, or
// crashed). Its running tasks end with 137 (their pollers see it gone); the
// share, with the volumes and the finished tasks' output, stays, so the next
// boot shares it again.
func (d *Driver) replaceDead(v *vm) {
	d.mu.Lock()
	if d.vm != v {
		d.mu.Unlock()
		return // another caller replaced it already
	}
	d.vm = nil
	d.freeSlots, d.nextSlot = nil, 0
	volumes := len(d.volumes)
	d.mu.Unlock()
	d.logger.Warn("qemu: the VM died; booting a new one and sharing the volumes with it again",
		"exit", fmt.Sprint(v.waitErr), "volumes", volumes, "console", tailFile(v.consolePath(), 3))
	v.stop()
}

// privateDir returns the driver's private directory, creating it on the
// first boot.
func (d *Driver) privateDir() (string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.dir != "" {
		return d.dir, nil
	}
	dir, err := makePrivateDir(d.namespace, d.logger)
	if err != nil {
		return "", err
	}
	share := filepath.Join(dir, "share")
	for _, sub := range []string{share, filepath.Join(share, "tasks"), filepath.Join(share, "volumes"), filepath.Join(share, ".pocketci")} {
		if err := os.MkdirAll(sub, 0o755); err != nil {
			_ = os.RemoveAll(dir)
			return "", fmt.Errorf("create share directory: %w", err)
		}
	}
	d.dir = dir
	return dir, nil
}

// CreateVolume creates (or returns) the volume name: a directory on the
// share, reachable by tasks that mount it.
func (d *Driver) CreateVolume(ctx context.Context, name string, size int) (orchestra.Volume, error) {
	if err := orchestra.ValidateVolumeName(name); err != nil {
		return nil, fmt.Errorf("create volume: %w", err)
	}
	v, err := d.ensureVM(ctx)
	if err != nil {
		return nil, fmt.Errorf("create volume %q: %w", name, err)
	}
	return d.volume(v, name)
}

// volume returns the volume name, creating its directory when needed.
func (d *Driver) volume(v *vm, name string) (*Volume, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, fmt.Errorf("volume %q: %w", name, orchestra.ErrClosed)
	}
	if vol, ok := d.volumes[name]; ok {
		return vol, nil
	}
	dir := orchestra.SafeName(orchestra.PathNameRule, name)
	vol := &Volume{driver: d, name: name, hostDir: filepath.Join(v.share, "volumes", dir), guestDir: guestShare + "/volumes/" + dir}
	if err := os.MkdirAll(vol.hostDir, 0o755); err != nil {
		return nil, fmt.Errorf("create volume %q: %w", name, err)
	}
	d.volumes[name] = vol
	d.logger.Debug("qemu: volume created", "volume", name)
	return vol, nil
}

// validate checks a task: orchestra.ValidateTask is the whole rule; the
// guest daemon starts any argv and resolves any user itself.
func validate(task orchestra.Task) error {
	return orchestra.ValidateTask(task)
}

// mountRel is where a mount is linked, relative to the task's working
// directory: a relative path is reached at <working dir>/<path>
// (orchestra.MountPath), and an absolute one also as ./<path>, the way the
// guide's tests reach it (each task has its own links, so two tasks can
// mount different volumes at the same path).
func mountRel(p string) string {
	return strings.TrimPrefix(orchestra.MountPath("/", p), "/")
}

// RunContainer starts task in the VM (booting it when needed) and returns at
// once. A task ID that already ran returns the same container.
func (d *Driver) RunContainer(ctx context.Context, task orchestra.Task) (orchestra.Container, error) {
	if err := validate(task); err != nil {
		return nil, err
	}
	d.mu.Lock()
	if c, ok := d.containers[task.ID]; ok {
		d.mu.Unlock()
		return c.waitStarted(ctx)
	}
	d.mu.Unlock()

	v, err := d.ensureVM(ctx)
	if err != nil {
		return nil, fmt.Errorf("run task %q: %w", task.ID, err)
	}
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil, fmt.Errorf("run task %q: %w", task.ID, orchestra.ErrClosed)
	}
	if c, ok := d.containers[task.ID]; ok {
		d.mu.Unlock()
		return c.waitStarted(ctx)
	}
	c := newContainer(d, v, task)
	d.containers[task.ID] = c
	d.bg.Add(1) // the task's end, reported once start succeeded
	d.mu.Unlock()
	c.slot = d.takeSlot()

	if err := c.start(ctx); err != nil {
		d.bg.Done()
		d.releaseSlot(v, c.slot)
		d.mu.Lock()
		if d.containers[task.ID] == c {
			delete(d.containers, task.ID)
		}
		d.mu.Unlock()
		c.finishStart(err)
		c.removeFiles()
		return nil, fmt.Errorf("run task %q: %w", task.ID, err)
	}
	c.finishStart(nil)
	return c, nil
}

// GetContainer returns the container of a task ID started by this driver
// instance. A VM's tasks live and die with the VM, so containers of other
// driver instances are never found.
func (d *Driver) GetContainer(ctx context.Context, taskID string) (orchestra.Container, error) {
	d.mu.Lock()
	c, ok := d.containers[taskID]
	d.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("task %q in namespace %s: %w", taskID, d.namespace, orchestra.ErrContainerNotFound)
	}
	return c.waitStarted(ctx)
}

// Close stops the VM (which ends every task), then removes the tasks'
// files, the volumes and the private directory. It is idempotent.
func (d *Driver) Close() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		d.bg.Wait()
		return nil
	}
	d.closed = true
	d.closeCancel()
	v := d.vm
	containers := make([]*Container, 0, len(d.containers))
	for _, c := range d.containers {
		containers = append(containers, c)
	}
	d.mu.Unlock()

	// A boot in progress finishes (and is stopped by its booter) first.
	d.bootSem <- struct{}{}
	<-d.bootSem

	var errs []error
	for _, c := range containers {
		c.stopStdin()
	}
	if v != nil {
		v.stop() // kills every task: each one's end is reported
	}
	d.bg.Wait()
	for _, c := range containers {
		c.removeFiles()
	}
	for _, vol := range d.volumeList() {
		if err := os.RemoveAll(vol.hostDir); err != nil {
			d.logger.Warn("qemu: remove volume", "volume", vol.name, "err", err)
			errs = append(errs, fmt.Errorf("remove volume %q: %w", vol.name, err))
		}
	}
	d.mu.Lock()
	dir := d.dir
	d.mu.Unlock()
	if dir != "" {
		if err := os.RemoveAll(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
			d.logger.Warn("qemu: remove private directory", "dir", dir, "err", err)
			errs = append(errs, fmt.Errorf("remove %s: %w", dir, err))
		}
	}
	d.logger.Debug("qemu: driver closed")
	return errors.Join(errs...)
}

func (d *Driver) volumeList() []*Volume {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]*Volume, 0, len(d.volumes))
	for _, v := range d.volumes {
		out = append(out, v)
	}
	return out
}

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
	"time"

	"github.com/jtarchie/pocketci/orchestra"
	"github.com/jtarchie/pocketci/orchestra/volumetar"
)

// driverName is the name the driver registers under.
const driverName = "qemu"

// Provider builds qemu drivers from a Config (nil: every setting from the
// environment, then the defaults).
func Provider() orchestra.DriverProvider {
	return orchestra.NewProvider[Config](driverName, func(_ context.Context, namespace string, cfg Config, logger *slog.Logger) (orchestra.Driver, error) {
		return New(namespace, cfg, logger)
	})
}

// Driver runs the tasks of one namespace in one VM, booted on first use.
// Tasks' files and volumes live in the namespace's directory on the host
// (see README.md), which every driver instance of the namespace shares.
type Driver struct {
	// HostDirs serves orchestra.VolumeDataAccessor on the host: volumes are
	// directories the guest mounts over 9p (with cache=none, so a task sees
	// at once what was extracted, and the host what a task wrote). No VM is
	// booted for it.
	volumetar.HostDirs

	namespace string
	cfg       Config
	logger    *slog.Logger
	share     string // the namespace's directory: the VM's 9p share

	bootSem chan struct{} // held by the goroutine booting the VM
	// closing ends when Close starts, cancelling a boot in progress.
	closing     context.Context
	closeCancel context.CancelFunc

	mu         sync.Mutex
	closed     bool
	dir        string // private directory, made on the first boot: sockets, console
	vm         *vm
	containers map[string]*Container // by task ID
	freeSlots  []int                 // guest slots of finished tasks, for reuse
	nextSlot   int                   // slots handed out so far on d.vm
	volumes    map[string]*Volume    // by name
	bg         sync.WaitGroup        // the ends of started tasks
}

var (
	_ orchestra.Driver             = (*Driver)(nil)
	_ orchestra.VolumeDataAccessor = (*Driver)(nil)
)

// New creates a driver for namespace with cfg (its empty fields from the
// environment). It boots nothing: the VM starts on the first RunContainer.
func New(namespace string, cfg Config, logger *slog.Logger) (*Driver, error) {
	if err := orchestra.ValidateNamespace(namespace); err != nil {
		return nil, fmt.Errorf("qemu driver: %w", err)
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("qemu driver: %w: %w", orchestra.ErrInvalidConfig, err)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	closing, closeCancel := context.WithCancel(context.Background())
	d := &Driver{
		closing:     closing,
		closeCancel: closeCancel,
		namespace:   namespace,
		cfg:         cfg,
		share:       namespaceDir(cfg.stateRoot(), namespace),
		logger:      logger.With("driver", driverName, "namespace", namespace),
		bootSem:     make(chan struct{}, 1),
		containers:  map[string]*Container{},
		volumes:     map[string]*Volume{},
	}
	d.HostDirs = volumetar.HostDirs{Driver: driverName, Namespace: namespace, Dir: d.volumeDir, Create: d.createVolumeDir, Closed: d.isClosed}
	return d, nil
}

// createVolumeDir makes volume name and returns its host directory.
func (d *Driver) createVolumeDir(name string) (string, error) {
	if err := orchestra.ValidateVolumeName(name); err != nil {
		return "", err
	}
	v, err := d.volume(name)
	if err != nil {
		return "", err
	}
	return v.hostDir, nil
}

// isClosed reports whether Close has been called.
func (d *Driver) isClosed() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.closed
}

// namespaceDir is the directory of namespace under root: one path element
// made by orchestra.SafeName, so any namespace the contract allows works.
func namespaceDir(root, namespace string) string {
	return filepath.Join(root, orchestra.SafeName(orchestra.PathNameRule, namespace))
}

// makeShare creates the namespace's directory (when another instance's
// Close removed it, it is made again).
func (d *Driver) makeShare() error {
	for _, sub := range []string{"tasks", "volumes", ".pocketci"} {
		if err := os.MkdirAll(filepath.Join(d.share, sub), 0o755); err != nil {
			return fmt.Errorf("create the namespace's directory: %w", err)
		}
	}
	return nil
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
			switch {
			case !v.alive():
				d.replaceVM(v, "the VM died; booting a new one and sharing the volumes with it again")
			case v.shareReplaced():
				d.replaceVM(v, "another instance of the namespace closed it (its directory was removed); booting a new VM")
			default:
				return v, nil
			}
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
		if err == nil {
			err = d.makeShare()
		}
		if err != nil {
			<-d.bootSem
			return nil, fmt.Errorf("qemu driver %s: %w", d.namespace, err)
		}
		bootCtx, cancel := context.WithCancel(ctx)
		stop := context.AfterFunc(d.closing, cancel)
		v, err := bootVM(bootCtx, d.namespace, dir, d.share, d.cfg, d.logger)
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

// replaceVM forgets a VM whose qemu exited without Close (killed, or
// crashed), or whose share is no longer the namespace's directory, and
// stops it. Its running tasks end with 137; the namespace's directory, with
// the volumes and the finished tasks' output, stays, so the next boot
// shares it again.
func (d *Driver) replaceVM(v *vm, why string) {
	d.mu.Lock()
	if d.vm != v {
		d.mu.Unlock()
		return // another caller replaced it already
	}
	d.vm = nil
	d.freeSlots, d.nextSlot = nil, 0
	volumes := len(d.volumes)
	d.mu.Unlock()
	exit := "running"
	if !v.alive() {
		exit = fmt.Sprint(v.waitErr)
	}
	d.logger.Warn("qemu: "+why, "exit", exit, "volumes", volumes, "console", tailFile(v.consolePath(), 3))
	v.stop()
}

// privateDir returns the driver's private directory (sockets and consoles
// of its boots), creating it on the first boot.
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
	d.dir = dir
	return dir, nil
}

// CreateVolume creates (or returns) the volume name: a directory in the
// namespace's directory, which tasks that mount it reach over the share.
// It boots nothing. size is a hint (see README.md).
func (d *Driver) CreateVolume(ctx context.Context, name string, size int) (orchestra.Volume, error) {
	if err := orchestra.ValidateVolumeName(name); err != nil {
		return nil, fmt.Errorf("create volume: %w", err)
	}
	return d.volume(name)
}

// volume returns the volume name, creating its directory when needed (also
// when another instance removed it meanwhile).
func (d *Driver) volume(name string) (*Volume, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, fmt.Errorf("volume %q: %w", name, orchestra.ErrClosed)
	}
	vol, ok := d.volumes[name]
	if !ok {
		dir := d.volumeDir(name)
		vol = &Volume{driver: d, name: name, hostDir: dir, guestDir: guestShare + "/volumes/" + filepath.Base(dir)}
	}
	if err := os.MkdirAll(vol.hostDir, 0o755); err != nil {
		return nil, fmt.Errorf("create volume %q: %w", name, err)
	}
	if !ok {
		d.volumes[name] = vol
		d.logger.Debug("qemu: volume created", "volume", name)
	}
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
// once. A task ID that already ran in the namespace, in this instance or in
// another one, returns that container and does not run again.
func (d *Driver) RunContainer(ctx context.Context, task orchestra.Task) (orchestra.Container, error) {
	if err := validate(task); err != nil {
		return nil, err
	}
	if c, err := d.known(ctx, task.ID); c != nil || err != nil {
		return c, err
	}
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

	err = c.claim()
	if errors.Is(err, errTaken) { // another instance ran it meanwhile
		d.bg.Done()
		other := d.attach(task.ID, c.hostDir)
		d.mu.Lock()
		d.containers[task.ID] = other
		d.mu.Unlock()
		c.replacement = other
		c.finishStart(nil)
		return other, nil
	}
	if err == nil {
		c.slot = d.takeSlot()
		if err = c.start(ctx); err != nil {
			d.releaseSlot(v, c.slot)
		}
	}
	if err != nil {
		d.bg.Done()
		d.mu.Lock()
		if d.containers[task.ID] == c {
			delete(d.containers, task.ID)
		}
		d.mu.Unlock()
		c.finishStart(err)
		c.removeFiles()
		c.unlock()
		return nil, fmt.Errorf("run task %q: %w", task.ID, err)
	}
	c.finishStart(nil)
	go c.watchKillRequest()
	return c, nil
}

// known returns the container of taskID when this instance has it, or when
// the namespace's directory has it (another instance ran it: the container
// is attached to its files), else nil.
func (d *Driver) known(ctx context.Context, taskID string) (orchestra.Container, error) {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil, fmt.Errorf("task %q: %w", taskID, orchestra.ErrClosed)
	}
	c, ok := d.containers[taskID]
	d.mu.Unlock()
	if ok {
		return c.waitStarted(ctx)
	}
	dir := filepath.Join(d.share, "tasks", taskDirName(d.namespace, taskID))
	if _, err := os.Stat(filepath.Join(dir, lockFile)); err != nil {
		return nil, nil
	}
	attached := d.attach(taskID, dir)
	d.mu.Lock()
	defer d.mu.Unlock()
	if c, ok := d.containers[taskID]; ok { // another caller was faster
		return c, nil
	}
	d.containers[taskID] = attached
	return attached, nil
}

// GetContainer returns the container whose ID (its task ID) is id: this
// instance's, or one another instance of the namespace started, in this
// process or another, found in the namespace's directory. It boots nothing.
func (d *Driver) GetContainer(ctx context.Context, id string) (orchestra.Container, error) {
	if orchestra.ValidateTaskID(id) != nil {
		return nil, fmt.Errorf("container %q in namespace %s: %w", id, d.namespace, orchestra.ErrContainerNotFound)
	}
	c, err := d.known(ctx, id)
	if err != nil {
		return nil, err
	}
	if c == nil {
		return nil, fmt.Errorf("container %q in namespace %s: %w", id, d.namespace, orchestra.ErrContainerNotFound)
	}
	return c, nil
}

// Close stops the VM (which ends every task it runs), asks the other
// instances of the namespace to kill the tasks they still run, and removes
// the namespace's directory (every task's files and every volume) and the
// private directory. It is idempotent.
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

	for _, c := range containers {
		c.stopStdin()
	}
	if v != nil {
		v.stop() // kills every task: each one's end is reported
	}
	d.bg.Wait()
	d.stopOthers()
	var errs []error
	if err := removeAllRetry(d.share); err != nil {
		d.logger.Warn("qemu: remove the namespace's directory", "dir", d.share, "err", err)
		errs = append(errs, fmt.Errorf("remove the namespace's directory %s: %w", d.share, err))
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

// othersWait bounds how long Close waits for other instances to kill their
// tasks of the namespace.
const othersWait = 15 * time.Second

// stopOthers asks, through a kill file, every instance that still runs a
// task of the namespace to kill it, and waits (bounded) until they did.
func (d *Driver) stopOthers() {
	entries, _ := os.ReadDir(filepath.Join(d.share, "tasks"))
	var running []string
	for _, e := range entries {
		dir := filepath.Join(d.share, "tasks", e.Name())
		if !e.IsDir() || strings.HasPrefix(e.Name(), ".") || !lockHeld(dir) {
			continue
		}
		if err := requestKill(dir); err != nil {
			d.logger.Warn("qemu: ask another instance to kill its task", "dir", dir, "err", err)
			continue
		}
		running = append(running, dir)
	}
	deadline := time.Now().Add(othersWait)
	for _, dir := range running {
		for lockHeld(dir) {
			if time.Now().After(deadline) {
				d.logger.Warn("qemu: another instance did not kill its task in time; removing its files anyway", "dir", dir)
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// removeAllRetry is os.RemoveAll, tried again a few times: another instance
// of the namespace may add an entry while the directory is removed.
func removeAllRetry(dir string) error {
	var err error
	for range 5 {
		if err = os.RemoveAll(dir); err == nil {
			return nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	return err
}

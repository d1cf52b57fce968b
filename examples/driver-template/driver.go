// Package mydriver is a small, complete orchestra driver to copy when you
// write your own. Each task runs on the host's filesystem in Linux
// namespaces of its own: a PID namespace (the task is PID 1 and sees only its
// own processes), a mount namespace with a private /proc, and IPC and UTS
// namespaces. Volumes are directories linked into the task's working
// directory. Linux only; creating namespaces needs root.
//
// The image of a task is ignored: tasks run the host's programs.
package mydriver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sync"

	"github.com/jtarchie/pocketci/orchestra"
)

// Name is the name the driver registers under. The plugin binary must be
// called pocketci-driver-<Name>.
const Name = "mydriver"

// RootEnv names the environment variable that overrides the directory under
// which every namespace keeps its tasks and volumes.
const RootEnv = "MYDRIVER_ROOT"

// defaultPath is the PATH a task gets when its Env has none.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

func init() {
	// Registering makes orchestra.Get(Name) work when the package is
	// compiled into a program; the plugin binary does not need it.
	orchestra.Add(Name, New)
}

// Root returns $MYDRIVER_ROOT, or <os.TempDir()>/pocketci-mydriver.
func Root() string {
	if r := os.Getenv(RootEnv); r != "" {
		return r
	}
	return filepath.Join(os.TempDir(), "pocketci-"+Name)
}

// Driver runs the tasks of one namespace. Everything it creates lives under
// <root>/<namespace>, so Close removes the namespace by removing that
// directory. It implements orchestra.Driver and orchestra.ContainerFinder.
type Driver struct {
	namespace string
	dir       string // <root>/<namespace>
	unshare   string // absolute path of util-linux unshare
	logger    *slog.Logger

	mu         sync.Mutex
	closed     bool
	containers map[string]*Container
	volumes    map[string]*Volume
}

var (
	_ orchestra.Driver          = (*Driver)(nil)
	_ orchestra.ContainerFinder = (*Driver)(nil)
)

// New creates a driver for namespace. It is an orchestra.InitFunc: the
// plugin SDK calls it once for every namespace the host opens.
func New(namespace string, logger *slog.Logger) (orchestra.Driver, error) {
	if err := orchestra.ValidateNamespace(namespace); err != nil {
		return nil, fmt.Errorf("%s: %w", Name, err)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		return nil, fmt.Errorf("%s: needs unshare from util-linux: %w", Name, err)
	}
	dir := namespaceDir(namespace)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("%s: create namespace directory: %w", Name, err)
	}
	return &Driver{
		namespace:  namespace,
		dir:        dir,
		unshare:    unshare,
		logger:     logger.With("driver", Name, "namespace", namespace),
		containers: map[string]*Container{},
		volumes:    map[string]*Volume{},
	}, nil
}

// Name returns the driver's registered name.
func (d *Driver) Name() string { return Name }

// namespaceDir is the directory of namespace: orchestra.SafeName makes one
// safe path element of any namespace, adding a short hash when it had to
// change it, so two namespaces never share a directory.
func namespaceDir(namespace string) string {
	return filepath.Join(Root(), orchestra.SafeName(orchestra.PathNameRule, namespace))
}

// CreateVolume creates, or returns the existing, volume: the directory
// <root>/<namespace>/volumes/<name>. size is ignored.
func (d *Driver) CreateVolume(_ context.Context, name string, _ int) (orchestra.Volume, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.volumeLocked(name)
}

// volumeLocked is CreateVolume with d.mu held.
func (d *Driver) volumeLocked(name string) (*Volume, error) {
	if d.closed {
		return nil, fmt.Errorf("%s: create volume %q: %w", Name, name, orchestra.ErrClosed)
	}
	if err := orchestra.ValidateVolumeName(name); err != nil {
		return nil, fmt.Errorf("%s: create volume: %w", Name, err)
	}
	if v, ok := d.volumes[name]; ok {
		return v, nil
	}
	v := &Volume{driver: d, name: name, dir: filepath.Join(d.dir, "volumes", orchestra.SafeName(orchestra.PathNameRule, name))}
	if err := os.MkdirAll(v.dir, 0o755); err != nil {
		return nil, fmt.Errorf("%s: create volume %q: %w", Name, name, err)
	}
	d.volumes[name] = v
	d.logger.Debug("volume created", "volume", name, "dir", v.dir)
	return v, nil
}

// GetContainer returns the container of taskID: one this instance started,
// or a finished one an earlier instance of the namespace left on disk (say,
// before the plugin restarted). Otherwise the error wraps
// orchestra.ErrContainerNotFound.
func (d *Driver) GetContainer(_ context.Context, taskID string) (orchestra.Container, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if c := d.findLocked(taskID); c != nil {
		return c, nil
	}
	return nil, fmt.Errorf("%s: task %q in namespace %q: %w", Name, taskID, d.namespace, orchestra.ErrContainerNotFound)
}

// Close kills every task of the namespace, waits for them, then removes the
// namespace directory with all logs and volumes (containers before volumes).
// It is idempotent, and goes on past failures, returning them joined.
func (d *Driver) Close() error {
	d.mu.Lock()
	d.closed = true
	containers := make([]*Container, 0, len(d.containers))
	for _, c := range d.containers {
		containers = append(containers, c)
	}
	clear(d.containers)
	clear(d.volumes)
	d.mu.Unlock()

	for _, c := range containers {
		c.kill() // all first, so that they die in parallel
	}
	var errs []error
	for _, c := range containers {
		if err := c.remove(context.Background()); err != nil {
			d.logger.Warn("close: remove container", "task", c.id, "err", err)
			errs = append(errs, err)
		}
	}
	if err := os.RemoveAll(d.dir); err != nil {
		d.logger.Warn("close: remove namespace directory", "dir", d.dir, "err", err)
		errs = append(errs, fmt.Errorf("%s: remove namespace directory: %w", Name, err))
	}
	return errors.Join(errs...)
}

// Volume is a directory shared by the tasks that mount it.
type Volume struct {
	driver *Driver
	name   string
	dir    string
}

var _ orchestra.Volume = (*Volume)(nil)

// Name is the name given to CreateVolume.
func (v *Volume) Name() string { return v.name }

// Cleanup removes the volume's directory. It is idempotent.
func (v *Volume) Cleanup(_ context.Context) error {
	v.driver.mu.Lock()
	if v.driver.volumes[v.name] == v {
		delete(v.driver.volumes, v.name)
	}
	v.driver.mu.Unlock()
	if err := os.RemoveAll(v.dir); err != nil {
		return fmt.Errorf("%s: remove volume %q: %w", Name, v.name, err)
	}
	return nil
}

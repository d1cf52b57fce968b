// Package mydriver is a small, complete orchestra driver to copy when you
// write your own. Each task runs on the host's filesystem in Linux
// namespaces of its own: a PID namespace (the task is PID 1 and sees only its
// own processes), a mount namespace with a private /proc in which its volumes
// are bind-mounted, and IPC and UTS namespaces. Linux only; creating
// namespaces needs root.
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
	"strings"
	"sync"

	"github.com/jtarchie/pocketci/orchestra"
)

// Name is the driver's name. The plugin binary must be called
// pocketci-driver-<Name>.
const Name = "mydriver"

// RootEnv names the environment variable that sets the default root
// directory (Config.Root left empty), under which every namespace keeps its
// tasks and volumes.
const RootEnv = "MYDRIVER_ROOT"

// defaultPath is the PATH a task gets when its Env has none.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Provider builds the driver's instances from a Config. The plugin's main
// serves it (pluginsdk.Serve(mydriver.Provider())), and a program that
// compiles the driver in adds it to its orchestra.DriverRegistry.
func Provider() orchestra.DriverProvider {
	return orchestra.NewProvider[Config](Name, New)
}

// Config is the driver's configuration, set per server or per pipeline and
// decoded strictly from JSON (an unknown field is an error). Every field's
// zero value means "the default".
type Config struct {
	// Root is the directory under which every namespace keeps its tasks
	// and volumes. Empty means Root(): $MYDRIVER_ROOT, else
	// <os.TempDir()>/pocketci-mydriver.
	Root string `json:"root,omitempty"`
}

// DriverName says which driver the config belongs to.
func (Config) DriverName() string { return Name }

// Validate checks the config. Its errors name the field and never quote the
// value: a config may carry secrets, and errors end up in logs.
func (c Config) Validate() error {
	if c.Root == "" {
		return nil
	}
	if strings.IndexByte(c.Root, 0) >= 0 {
		return fmt.Errorf(`%s: config field "root" contains a NUL byte`, Name)
	}
	if !filepath.IsAbs(c.Root) {
		return fmt.Errorf(`%s: config field "root" must be an absolute path`, Name)
	}
	return nil
}

// root is the directory the config selects.
func (c Config) root() string {
	if c.Root != "" {
		return c.Root
	}
	return Root()
}

// Root returns the default root directory: $MYDRIVER_ROOT, or
// <os.TempDir()>/pocketci-mydriver.
func Root() string {
	if r := os.Getenv(RootEnv); r != "" {
		return r
	}
	return filepath.Join(os.TempDir(), "pocketci-"+Name)
}

// Driver runs the tasks of one namespace. Everything it creates lives under
// <root>/<namespace>, and that directory, not the Driver, is the truth: a
// second instance of the namespace (in this process or after the plugin
// restarted) sees the same tasks and volumes. Close removes the namespace by
// removing that directory. It implements orchestra.Driver.
type Driver struct {
	namespace string
	dir       string // <root>/<namespace>
	unshare   string // absolute path of util-linux unshare
	logger    *slog.Logger

	mu         sync.Mutex
	closed     bool
	containers map[string]*Container // tasks this instance started or found
	volumes    map[string]*Volume
}

var _ orchestra.Driver = (*Driver)(nil)

// New creates a driver for namespace with cfg; Provider builds its drivers
// with it. Two drivers with different configs work side by side.
func New(_ context.Context, namespace string, cfg Config, logger *slog.Logger) (orchestra.Driver, error) {
	if err := orchestra.ValidateNamespace(namespace); err != nil {
		return nil, fmt.Errorf("%s: %w", Name, err)
	}
	// UnmarshalConfig validated a config that came as JSON; one built in Go
	// comes here directly.
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", orchestra.ErrInvalidConfig, err)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		return nil, fmt.Errorf("%s: needs unshare from util-linux: %w", Name, err)
	}
	dir := namespaceDir(cfg.root(), namespace)
	if err := os.MkdirAll(filepath.Join(dir, "tasks"), 0o755); err != nil {
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

// Name returns the driver's name.
func (d *Driver) Name() string { return Name }

// namespaceDir is the directory of namespace under root:
// orchestra.SafeName makes one safe path element of any namespace, adding a
// short hash when it had to change it, so two namespaces never share a
// directory.
func namespaceDir(root, namespace string) string {
	return filepath.Join(root, orchestra.SafeName(orchestra.PathNameRule, namespace))
}

// CreateVolume creates, or returns the existing, volume: the directory
// <root>/<namespace>/volumes/<name>. A directory has no size: size is
// accepted and ignored.
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

// GetContainer returns the container whose ID() is containerID: one this
// instance knows, or one the namespace's directory holds, running or done,
// whichever instance started it. Otherwise the error wraps
// orchestra.ErrContainerNotFound.
func (d *Driver) GetContainer(_ context.Context, containerID string) (orchestra.Container, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, fmt.Errorf("%s: get container %q: %w", Name, containerID, orchestra.ErrClosed)
	}
	if c := d.findLocked(containerID); c != nil {
		return c, nil
	}
	return nil, fmt.Errorf("%s: task %q in namespace %q: %w", Name, containerID, d.namespace, orchestra.ErrContainerNotFound)
}

// Close kills every task of the namespace (also those another instance
// started), waits for them, then removes the namespace directory with all
// logs and volumes (containers before volumes). It is idempotent, and goes
// on past failures, returning them joined.
func (d *Driver) Close() error {
	d.mu.Lock()
	d.closed = true
	containers := d.allTasksLocked()
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

// allTasksLocked returns the containers this instance knows and those of
// the namespace's directory it does not (started by another instance).
func (d *Driver) allTasksLocked() []*Container {
	containers := make([]*Container, 0, len(d.containers))
	known := map[string]bool{}
	for _, c := range d.containers {
		containers = append(containers, c)
		known[c.dir] = true
	}
	entries, err := os.ReadDir(filepath.Join(d.dir, "tasks"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		d.logger.Warn("close: list tasks", "err", err)
	}
	for _, e := range entries {
		dir := filepath.Join(d.dir, "tasks", e.Name())
		if strings.HasPrefix(e.Name(), ".") || known[dir] {
			continue // a task being created or removed, or one we have
		}
		if c := d.openTask(e.Name(), dir); c != nil {
			containers = append(containers, c)
		}
	}
	return containers
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

// Path is the volume's directory on this machine.
func (v *Volume) Path() string { return v.dir }

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

//go:build linux

package native

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

// DriverName is the name of native's provider.
const DriverName = "native"

// RootEnv names the environment variable that sets the default root
// directory (Config.Root left empty), under which every namespace keeps its
// tasks and volumes.
const RootEnv = "POCKETCI_NATIVE_ROOT"

// defaultPath is the PATH a task gets when its Env has none.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Provider builds native drivers from a Config.
func Provider() orchestra.DriverProvider {
	return orchestra.NewProvider[Config](DriverName, New)
}

// Config is native's configuration, per server or pipeline.
type Config struct {
	// Root is the directory under which every namespace keeps its tasks
	// and volumes. Empty means Root(): $POCKETCI_NATIVE_ROOT, else
	// <os.TempDir()>/pocketci-native.
	Root string `json:"root,omitempty"`
}

// DriverName is "native".
func (Config) DriverName() string { return DriverName }

// Validate checks the config. Its errors name the field, never the value.
func (c Config) Validate() error {
	if c.Root == "" {
		return nil
	}
	if strings.IndexByte(c.Root, 0) >= 0 {
		return errors.New(`native: config field "root" contains a NUL byte`)
	}
	if !filepath.IsAbs(c.Root) {
		return errors.New(`native: config field "root" must be an absolute path`)
	}
	return nil
}

// Root returns the directory under which native keeps its namespaces when
// Config.Root is empty: $POCKETCI_NATIVE_ROOT when set, otherwise
// <os.TempDir()>/pocketci-native.
func Root() string {
	if r := os.Getenv(RootEnv); r != "" {
		return r
	}
	return filepath.Join(os.TempDir(), "pocketci-native")
}

// Driver runs the tasks of one namespace as local processes. It implements
// orchestra.Driver.
type Driver struct {
	// HostDirs serves orchestra.VolumeDataAccessor: volumes are directories.
	volumetar.HostDirs

	namespace string
	dir       string // <root>/<namespace>
	logger    *slog.Logger

	mu         sync.Mutex
	closed     bool
	containers map[string]*Container
	volumes    map[string]*Volume
	sandboxes  map[*Sandbox]struct{}
}

var (
	_ orchestra.Driver             = (*Driver)(nil)
	_ orchestra.VolumeDataAccessor = (*Driver)(nil)
)

// New creates a native driver for namespace with cfg; Provider builds its
// drivers with it. Two drivers with different roots work side by side.
func New(_ context.Context, namespace string, cfg Config, logger *slog.Logger) (orchestra.Driver, error) {
	if err := orchestra.ValidateNamespace(namespace); err != nil {
		return nil, fmt.Errorf("native: %w", err)
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", orchestra.ErrInvalidConfig, err)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	root := cfg.Root
	if root == "" {
		root = Root()
	}
	dir := namespaceDir(root, namespace)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("native: create namespace directory %q: %w", dir, err)
	}
	d := &Driver{
		namespace:  namespace,
		dir:        dir,
		logger:     logger.With("driver", DriverName, "namespace", namespace),
		containers: map[string]*Container{},
		volumes:    map[string]*Volume{},
		sandboxes:  map[*Sandbox]struct{}{},
	}
	d.HostDirs = volumetar.HostDirs{Driver: DriverName, Namespace: namespace, Dir: d.volumeDir, Create: d.createVolumeDir, Closed: d.isClosed}
	return d, nil
}

// namespaceDir is the directory of namespace under root: one path element
// made by orchestra.SafeName, so any namespace the contract allows works.
func namespaceDir(root, namespace string) string {
	return filepath.Join(root, orchestra.SafeName(orchestra.PathNameRule, namespace))
}

// Name returns "native".
func (d *Driver) Name() string { return DriverName }

// CreateVolume creates, or returns the existing, volume name: the directory
// <root>/<namespace>/volumes/<name>. size is a hint: a directory has no size.
func (d *Driver) CreateVolume(_ context.Context, name string, _ int) (orchestra.Volume, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.volumeLocked(name)
}

func (d *Driver) volumeLocked(name string) (*Volume, error) {
	if d.closed {
		return nil, fmt.Errorf("native: create volume %q: %w", name, orchestra.ErrClosed)
	}
	if err := orchestra.ValidateVolumeName(name); err != nil {
		return nil, fmt.Errorf("native: create volume: %w", err)
	}
	dir := d.volumeDir(name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("native: create volume %q: %w", name, err)
	}
	if v, ok := d.volumes[name]; ok {
		return v, nil
	}
	v := &Volume{driver: d, name: name, dir: dir}
	d.volumes[name] = v
	d.logger.Debug("volume created", "volume", name, "dir", dir)
	return v, nil
}

// createVolumeDir makes volume name and returns its directory.
func (d *Driver) createVolumeDir(name string) (string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	v, err := d.volumeLocked(name)
	if err != nil {
		return "", err
	}
	return v.dir, nil
}

// isClosed reports whether Close has been called.
func (d *Driver) isClosed() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.closed
}

// volumeDir is the directory of volume name.
func (d *Driver) volumeDir(name string) string {
	return filepath.Join(d.dir, "volumes", orchestra.SafeName(orchestra.PathNameRule, name))
}

// GetContainer returns the container whose ID (its task ID) is taskID: the
// one this driver started, a
// finished one that another instance of the namespace left on disk, or one
// that another instance (in this process or another) still runs; otherwise
// an error wrapping orchestra.ErrContainerNotFound.
func (d *Driver) GetContainer(_ context.Context, taskID string) (orchestra.Container, error) {
	if err := orchestra.ValidateTaskID(taskID); err != nil {
		return nil, fmt.Errorf("native: %w", err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, fmt.Errorf("native: get task %q: %w", taskID, orchestra.ErrClosed)
	}
	if c, ok := d.containers[taskID]; ok {
		return c, nil
	}
	c, err := d.openLocked(taskID, nil)
	if err != nil {
		return nil, err
	}
	d.containers[taskID] = c
	return c, nil
}

// Close kills every task of the namespace, its own and those another driver
// instance runs (through their recorded shim pid), and every command of its
// sandboxes, waits for them, and removes the namespace directory with all
// tasks, sandboxes and volumes. It is idempotent and continues past
// failures, returning them joined.
func (d *Driver) Close() error {
	d.mu.Lock()
	d.closed = true
	containers := make([]*Container, 0, len(d.containers))
	for _, c := range d.containers {
		containers = append(containers, c)
	}
	sandboxes := make([]*Sandbox, 0, len(d.sandboxes))
	for s := range d.sandboxes {
		sandboxes = append(sandboxes, s)
	}
	clear(d.containers)
	clear(d.volumes)
	clear(d.sandboxes)
	d.mu.Unlock()
	containers = append(containers, d.othersOnDisk(containers)...)

	// Kill every group first so that they die in parallel, then wait.
	for _, c := range containers {
		c.kill()
	}
	for _, s := range sandboxes {
		s.killAll()
	}
	var errs []error
	for _, s := range sandboxes {
		if err := s.remove(context.Background()); err != nil {
			d.logger.Warn("close: remove sandbox", "sandbox", s.id, "err", err)
			errs = append(errs, err)
		}
	}
	for _, c := range containers {
		if err := c.remove(context.Background()); err != nil {
			d.logger.Warn("close: remove container", "task", c.id, "err", err)
			errs = append(errs, err)
		}
	}
	if err := removeAllRetry(d.dir); err != nil {
		d.logger.Warn("close: remove namespace directory", "dir", d.dir, "err", err)
		errs = append(errs, fmt.Errorf("native: remove namespace directory %q: %w", d.dir, err))
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

// Path is the volume's directory on this host.
func (v *Volume) Path() string { return v.dir }

// Cleanup removes the volume's directory. It is idempotent.
func (v *Volume) Cleanup(_ context.Context) error {
	v.driver.mu.Lock()
	if cur, ok := v.driver.volumes[v.name]; ok && cur == v {
		delete(v.driver.volumes, v.name)
	}
	v.driver.mu.Unlock()
	if err := os.RemoveAll(v.dir); err != nil {
		return fmt.Errorf("native: remove volume %q: %w", v.name, err)
	}
	return nil
}

// othersOnDisk returns an attached container for every task directory whose
// lock another driver instance holds and that is not among known.
func (d *Driver) othersOnDisk(known []*Container) []*Container {
	entries, err := os.ReadDir(filepath.Join(d.dir, "tasks"))
	if err != nil {
		return nil
	}
	mine := map[string]bool{}
	for _, c := range known {
		mine[c.dir] = true
	}
	var out []*Container
	for _, e := range entries {
		dir := filepath.Join(d.dir, "tasks", e.Name())
		if e.IsDir() && !mine[dir] && lockHeld(dir) {
			out = append(out, d.attach(e.Name(), dir))
		}
	}
	return out
}

// removeAllRetry is os.RemoveAll, tried again a few times when it fails:
// another instance of the namespace (a host re-attaching, a task finishing)
// may add an entry while the directory is being removed, and RemoveAll then
// fails with "directory not empty".
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

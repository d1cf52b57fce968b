// Package ctxdriver is a test fixture: a small driver written the way the
// guide's examples and many real drivers are, binding each task's process
// to the ctx that RunContainer receives (exec.CommandContext). The task
// runs exactly as long as that ctx lives; when it ends, the task is killed.
// The conformance suite must pass it in process and through a plugin, which
// is only possible when the plugin's RunContainer ctx lives as long as the
// caller's (protocol 1.3).
//
// Each task runs in PID and mount namespaces of its own: its PID 1 is a
// shell that bind-mounts the task's volumes (so nested mounts work), enters
// its working directory and runs the command, and killing that PID 1 kills
// every descendant. Linux only; it needs root.
//
// What the fixture does with each task field: WorkDir is applied (relative
// to the default working directory, or absolute with that directory
// standing for the root, as mount paths); Mounts[i].SizeGB and
// ContainerLimits (CPU, Memory, CPUKind) are accepted as hints and ignored;
// Image is ignored (tasks run the host's programs); Privileged is always
// true in effect (tasks run as the driver's user, root); User is refused.
//
// Logs with follow waits until the task exited, then writes all of its
// output. GetContainer finds the containers of the same driver instance
// only: for a task another instance started, it returns an error wrapping
// errors.ErrUnsupported (the conformance suite then skips those cases).
package ctxdriver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/jtarchie/pocketci/orchestra"
)

// Name is the name the fixture is served under.
const Name = "ctxdriver"

// ReportEnv, set in a task's environment, makes the task's stdout start
// with the deadline of the ctx RunContainer got ("deadline none" or
// "deadline <unix nanoseconds>"), so that a test sees it crossed the wire.
const ReportEnv = "CTXDRIVER_REPORT"

// RootEnv sets the default root directory (Config.Root left empty), under
// which namespaces live.
const RootEnv = "CTXDRIVER_ROOT"

// Provider builds the fixture's drivers from a Config.
func Provider() orchestra.DriverProvider {
	return orchestra.NewProvider[Config](Name, New)
}

// Config is the fixture's configuration.
type Config struct {
	// Root is the directory under which namespaces live. Empty means
	// Root(): $CTXDRIVER_ROOT, else <os.TempDir()>/pocketci-ctxdriver.
	Root string `json:"root,omitempty"`
}

// DriverName is "ctxdriver".
func (Config) DriverName() string { return Name }

// Validate checks the config; its errors name the field, never the value.
func (c Config) Validate() error {
	if c.Root != "" && (!filepath.IsAbs(c.Root) || strings.IndexByte(c.Root, 0) >= 0) {
		return errors.New(`ctxdriver: config field "root" must be an absolute path`)
	}
	return nil
}

// Root is $CTXDRIVER_ROOT, or <os.TempDir()>/pocketci-ctxdriver.
func Root() string {
	if r := os.Getenv(RootEnv); r != "" {
		return r
	}
	return filepath.Join(os.TempDir(), "pocketci-"+Name)
}

func namespaceDir(root, namespace string) string {
	return filepath.Join(root, orchestra.SafeName(orchestra.PathNameRule, namespace))
}

// Driver runs the tasks of one namespace.
type Driver struct {
	namespace string
	dir       string

	mu         sync.Mutex
	closed     bool
	containers map[string]*container
}

var _ orchestra.Driver = (*Driver)(nil)

// New creates the fixture's driver for namespace; Provider builds drivers
// with it.
func New(_ context.Context, namespace string, cfg Config, _ *slog.Logger) (orchestra.Driver, error) {
	if err := orchestra.ValidateNamespace(namespace); err != nil {
		return nil, fmt.Errorf("ctxdriver: %w", err)
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", orchestra.ErrInvalidConfig, err)
	}
	root := cfg.Root
	if root == "" {
		root = Root()
	}
	dir := namespaceDir(root, namespace)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("ctxdriver: create namespace directory: %w", err)
	}
	return &Driver{namespace: namespace, dir: dir, containers: map[string]*container{}}, nil
}

// Name returns Name.
func (d *Driver) Name() string { return Name }

// CreateVolume creates the directory of a volume; size is ignored.
func (d *Driver) CreateVolume(_ context.Context, name string, _ int) (orchestra.Volume, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.volumeLocked(name)
}

func (d *Driver) volumeLocked(name string) (*volume, error) {
	if d.closed {
		return nil, fmt.Errorf("ctxdriver: create volume %q: %w", name, orchestra.ErrClosed)
	}
	if err := orchestra.ValidateVolumeName(name); err != nil {
		return nil, fmt.Errorf("ctxdriver: %w", err)
	}
	v := &volume{name: name, dir: filepath.Join(d.dir, "volumes", orchestra.SafeName(orchestra.PathNameRule, name))}
	if err := os.MkdirAll(v.dir, 0o755); err != nil {
		return nil, fmt.Errorf("ctxdriver: create volume %q: %w", name, err)
	}
	return v, nil
}

// GetContainer returns a container this instance started. A task of the
// namespace that another instance started is not found here: the error
// wraps errors.ErrUnsupported. Otherwise it wraps
// orchestra.ErrContainerNotFound.
func (d *Driver) GetContainer(_ context.Context, containerID string) (orchestra.Container, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, fmt.Errorf("ctxdriver: get container %q: %w", containerID, orchestra.ErrClosed)
	}
	if c, ok := d.containers[containerID]; ok {
		return c, nil
	}
	if _, err := os.Stat(d.taskDir(containerID)); err == nil {
		return nil, fmt.Errorf("ctxdriver: task %q was started by another driver instance, which this fixture cannot reach: %w", containerID, errors.ErrUnsupported)
	}
	return nil, fmt.Errorf("ctxdriver: task %q in namespace %q: %w", containerID, d.namespace, orchestra.ErrContainerNotFound)
}

func (d *Driver) taskDir(id string) string {
	return filepath.Join(d.dir, "tasks", orchestra.SafeName(orchestra.PathNameRule, id))
}

// Close kills every task and removes the namespace.
func (d *Driver) Close() error {
	d.mu.Lock()
	d.closed = true
	cs := d.containers
	d.containers = map[string]*container{}
	d.mu.Unlock()
	var errs []error
	for _, c := range cs {
		errs = append(errs, c.remove())
	}
	if err := os.RemoveAll(d.dir); err != nil {
		errs = append(errs, fmt.Errorf("ctxdriver: remove namespace directory: %w", err))
	}
	return errors.Join(errs...)
}

type volume struct{ name, dir string }

func (v *volume) Name() string { return v.name }
func (v *volume) Path() string { return v.dir }

func (v *volume) Cleanup(context.Context) error {
	if err := os.RemoveAll(v.dir); err != nil {
		return fmt.Errorf("ctxdriver: remove volume %q: %w", v.name, err)
	}
	return nil
}

// Leaks reports the namespace directory (under the default root) and every
// live process whose working directory is under it.
func Leaks(namespace string) ([]string, error) {
	dir := namespaceDir(Root(), namespace)
	var left []string
	if _, err := os.Stat(dir); err == nil {
		left = append(left, "directory "+dir)
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/cwd")
	for _, p := range procs {
		cwd, err := os.Readlink(p)
		cwd = strings.TrimSuffix(cwd, " (deleted)")
		if err != nil || (cwd != dir && !strings.HasPrefix(cwd, dir+"/")) {
			continue
		}
		pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
		stat, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if i := strings.LastIndexByte(string(stat), ')'); i >= 0 && strings.HasPrefix(string(stat[i+1:]), " Z") {
			continue
		}
		left = append(left, fmt.Sprintf("process %d in %s", pid, cwd))
	}
	return left, nil
}

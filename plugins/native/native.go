//go:build linux

package native

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/jtarchie/pocketci/orchestra"
)

// DriverName is the name native registers under.
const DriverName = "native"

// RootEnv names the environment variable that overrides the root directory
// under which every namespace keeps its tasks and volumes.
const RootEnv = "POCKETCI_NATIVE_ROOT"

// defaultPath is the PATH a task gets when its Env has none.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

func init() {
	orchestra.Add(DriverName, New)
}

// Root returns the directory under which native keeps its namespaces:
// $POCKETCI_NATIVE_ROOT when set, otherwise <os.TempDir()>/pocketci-native.
func Root() string {
	if r := os.Getenv(RootEnv); r != "" {
		return r
	}
	return filepath.Join(os.TempDir(), "pocketci-native")
}

// Driver runs the tasks of one namespace as local processes. It implements
// orchestra.Driver and orchestra.ContainerFinder.
type Driver struct {
	namespace string
	dir       string // <root>/<namespace>
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

// New creates a native driver for namespace. It is an orchestra.InitFunc.
func New(namespace string, logger *slog.Logger) (orchestra.Driver, error) {
	if err := validateNamespace(namespace); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	dir := filepath.Join(Root(), namespace)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("native: create namespace directory %q: %w", dir, err)
	}
	return &Driver{
		namespace:  namespace,
		dir:        dir,
		logger:     logger.With("driver", DriverName, "namespace", namespace),
		containers: map[string]*Container{},
		volumes:    map[string]*Volume{},
	}, nil
}

// validateNamespace refuses namespaces that cannot be one directory name.
func validateNamespace(namespace string) error {
	switch {
	case namespace == "":
		return errors.New("native: namespace must not be empty")
	case strings.ContainsAny(namespace, "/\\\x00"):
		return fmt.Errorf("native: namespace %q must not contain '/', '\\' or NUL", namespace)
	case strings.Contains(namespace, ".."), namespace == ".":
		return fmt.Errorf("native: namespace %q must not contain '..' or be '.'", namespace)
	}
	return nil
}

// Name returns "native".
func (d *Driver) Name() string { return DriverName }

// sanitize turns s into a safe single path element: characters other than
// [A-Za-z0-9._-] become '_', and when anything changed (or the name is
// reserved or too long) a short hash of s is appended so that two different
// inputs never share a directory.
func sanitize(s string) string {
	const maxLen = 64
	var b strings.Builder
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '_', r == '-':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	out := b.String()
	if out == s && s != "" && !strings.HasPrefix(s, ".") && len(s) <= maxLen {
		return out
	}
	if len(out) > maxLen {
		out = out[:maxLen]
	}
	sum := sha256.Sum256([]byte(s))
	return strings.TrimLeft(out, ".") + "-" + hex.EncodeToString(sum[:4])
}

// CreateVolume creates, or returns the existing, volume name: the directory
// <root>/<namespace>/volumes/<name>. size is ignored.
func (d *Driver) CreateVolume(_ context.Context, name string, _ int) (orchestra.Volume, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.volumeLocked(name)
}

func (d *Driver) volumeLocked(name string) (*Volume, error) {
	if d.closed {
		return nil, fmt.Errorf("native: create volume %q: %w", name, orchestra.ErrClosed)
	}
	if name == "" {
		return nil, fmt.Errorf("native: create volume: %w: volume name is empty", orchestra.ErrInvalidTask)
	}
	dir := filepath.Join(d.dir, "volumes", sanitize(name))
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

// GetContainer returns the container this driver started for taskID, or a
// finished one that another instance of the namespace left on disk, or an
// error wrapping orchestra.ErrContainerNotFound.
func (d *Driver) GetContainer(_ context.Context, taskID string) (orchestra.Container, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if c, ok := d.containers[taskID]; ok {
		return c, nil
	}
	if c, ok := d.recoverLocked(taskID); ok {
		return c, nil
	}
	return nil, fmt.Errorf("native: task %q in namespace %q: %w", taskID, d.namespace, orchestra.ErrContainerNotFound)
}

// Close kills every process group of the namespace, waits for them, and
// removes the namespace directory with all tasks and volumes. It is
// idempotent and continues past failures, returning them joined.
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

	// Kill every group first so that they die in parallel, then wait.
	for _, c := range containers {
		c.kill()
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

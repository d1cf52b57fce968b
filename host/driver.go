package host

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/jtarchie/pocketci/internal/wire"
	"github.com/jtarchie/pocketci/orchestra"
)

// hostDriver is the host side of a driver instance in a plugin, as the host
// hands it out. It adds only what the client layer (internal/wire) cannot
// know: when the plugin process dies, the next call restarts it and reopens
// the instance in the new process; containers found again by task ID keep
// working. Every call itself is the client layer's.
type hostDriver struct {
	plugin    *Plugin
	namespace string
	name      string
	opts      OpenOptions

	mu       sync.Mutex
	inner    orchestra.Driver // the instance in process generation gen
	gen      uint64
	closed   bool
	closeErr error
}

// newDriver wraps inner, opened in the current process, and tracks it so the
// host closes it on exit.
func (p *Plugin) newDriver(namespace string, inner orchestra.Driver, opts OpenOptions) orchestra.Driver {
	if name := inner.Name(); name != p.Name {
		// The served name is the one callers asked for, and the one the
		// registry knows: it wins, and the disagreement is reported.
		p.logger.Warn("driver's Name() disagrees with the name it is served under: using the served name",
			"plugin", p.Name, "served", p.Name, "driver_name", name)
	}
	if opts.Ephemeral {
		p.trackEphemeral(namespace, 1)
	}
	p.mu.Lock()
	d := &hostDriver{plugin: p, namespace: namespace, name: p.Name, opts: opts, inner: inner, gen: p.gen}
	p.drivers[d] = struct{}{}
	p.mu.Unlock()
	var vd orchestra.VolumeDataAccessor
	var sb orchestra.SandboxDriver
	if _, ok := inner.(orchestra.VolumeDataAccessor); ok {
		vd = hostVolumeData{d}
	}
	if _, ok := inner.(orchestra.SandboxDriver); ok {
		sb = hostSandboxDriver{d}
	}
	return wire.Optional(d, vd, sb)
}

var (
	_ orchestra.Driver    = (*hostDriver)(nil)
	_ orchestra.Container = (*hostContainer)(nil)
	_ orchestra.Volume    = (*hostVolume)(nil)
)

// current returns the instance in the running process, reopening it there if
// the process it lived in died.
func (d *hostDriver) current(ctx context.Context) (orchestra.Driver, uint64, error) {
	if err := d.plugin.host.checkOpen(ctx, d.plugin.Name); err != nil {
		return nil, 0, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.plugin.alive(d.gen) {
		return d.inner, d.gen, nil
	}
	rpc, gen, err := d.plugin.start(ctx)
	if err != nil {
		return nil, 0, err
	}
	inner, err := d.plugin.openNamespace(ctx, rpc, d.namespace, d.opts)
	if err != nil {
		return nil, 0, fmt.Errorf("reopen namespace %q after the plugin restarted: %w", d.namespace, err)
	}
	d.plugin.logger.Info("driver reopened after plugin restart", "plugin", d.plugin.Name, "namespace", d.namespace, "generation", gen)
	d.inner, d.gen = inner, gen
	return inner, gen, nil
}

func (d *hostDriver) forget() {
	d.plugin.mu.Lock()
	delete(d.plugin.drivers, d)
	d.plugin.mu.Unlock()
}

// Release tells the host not to close d when the host closes. The resources
// of d's namespace then outlive the host, until a driver opened later in the
// same namespace is closed (`orchestra clean`). For a driver that does not
// come from a Plugin, Release does nothing.
func Release(d orchestra.Driver) {
	if d, ok := wire.Base(d).(*hostDriver); ok {
		d.forget()
	}
}

// Name is the driver's name.
func (d *hostDriver) Name() string { return d.name }

// Close closes the instance (in a restarted process if its own died, so the
// namespace is cleaned all the same). It is idempotent.
func (d *hostDriver) Close() error { return d.close(context.Background()) }

func (d *hostDriver) close(ctx context.Context) error {
	d.mu.Lock()
	closed := d.closed
	d.mu.Unlock()
	if closed {
		return d.closeErr
	}
	ctx, cancel := context.WithTimeout(ctx, d.plugin.host.startTimeout)
	defer cancel()
	_, err := retry(d.plugin, "Close", func() (struct{}, uint64, error) {
		inner, gen, err := d.current(ctx)
		if err != nil {
			return struct{}{}, 0, err
		}
		return struct{}{}, gen, d.closeBounded(inner)
	})
	d.mu.Lock()
	wasClosed := d.closed
	d.closed, d.closeErr = true, err
	d.mu.Unlock()
	if d.opts.Ephemeral && err == nil && !wasClosed {
		d.plugin.trackEphemeral(d.namespace, -1)
	}
	d.forget()
	return err
}

// errCloseTimeout marks a driver Close that the host stopped waiting for.
var errCloseTimeout = errors.New("close timed out")

// closeBounded closes inner, waiting at most the host's CloseTimeout: a
// plugin that never answers cannot hold up its caller (Close has no ctx).
func (d *hostDriver) closeBounded(inner orchestra.Driver) error {
	errc := make(chan error, 1)
	go func() { errc <- inner.Close() }()
	timeout := d.plugin.host.closeTimeout
	select {
	case err := <-errc:
		return err
	case <-time.After(timeout):
		return fmt.Errorf("plugin %s: Close of namespace %q did not return within %s: %w", d.plugin.Name, d.namespace, timeout, errCloseTimeout)
	}
}

// CreateVolume creates or finds a volume.
func (d *hostDriver) CreateVolume(ctx context.Context, name string, size int) (orchestra.Volume, error) {
	inner, gen, err := d.current(ctx)
	if err != nil {
		return nil, err
	}
	v, err := inner.CreateVolume(ctx, name, size)
	if err != nil {
		return nil, err
	}
	return &hostVolume{driver: d, name: name, size: size, path: v.Path(), inner: v, gen: gen}, nil
}

// RunContainer starts a task.
func (d *hostDriver) RunContainer(ctx context.Context, task orchestra.Task) (orchestra.Container, error) {
	inner, gen, err := d.current(ctx)
	if err != nil {
		return nil, err
	}
	c, err := inner.RunContainer(ctx, task)
	if err != nil {
		return nil, err
	}
	return d.wrap(c, gen), nil
}

func (d *hostDriver) wrap(inner orchestra.Container, gen uint64) orchestra.Container {
	return &hostContainer{driver: d, id: inner.ID(), inner: inner, gen: gen}
}

// GetContainer finds a container of the namespace by its ID.
func (d *hostDriver) GetContainer(ctx context.Context, id string) (orchestra.Container, error) {
	inner, gen, err := d.current(ctx)
	if err != nil {
		return nil, err
	}
	c, err := inner.GetContainer(ctx, id)
	if err != nil {
		return nil, err
	}
	return d.wrap(c, gen), nil
}

// hostContainer is the host side of a container in a plugin, found again by
// its ID after the plugin restarts.
type hostContainer struct {
	driver *hostDriver
	id     string

	mu    sync.Mutex
	inner orchestra.Container // its finished status is cached there (wire.FinalStatus)
	gen   uint64
}

// current returns the container in the running process. After a restart it
// asks the reopened driver for it by ID; a driver that cannot find it (its
// state died with the process) gives an error wrapping
// orchestra.ErrContainerNotFound.
func (c *hostContainer) current(ctx context.Context) (orchestra.Container, error) {
	inner, _, err := c.currentGen(ctx)
	return inner, err
}

func (c *hostContainer) currentGen(ctx context.Context) (orchestra.Container, uint64, error) {
	if err := c.driver.plugin.host.checkOpen(ctx, c.driver.plugin.Name); err != nil {
		return nil, 0, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.driver.plugin.alive(c.gen) {
		return c.inner, c.gen, nil
	}
	inner, gen, err := c.driver.current(ctx)
	if err != nil {
		return nil, 0, err
	}
	found, err := inner.GetContainer(ctx, c.id)
	if err != nil {
		return nil, 0, fmt.Errorf("plugin %s restarted: container %q: %w", c.driver.plugin.Name, c.id, err)
	}
	c.driver.plugin.logger.Info("container re-attached after plugin restart", "plugin", c.driver.plugin.Name, "container", c.id)
	wire.CarryFinal(c.inner, found)
	c.inner, c.gen = found, gen
	return found, gen, nil
}

// retry makes an idempotent call, and makes it once more, in the restarted
// plugin, when the plugin died during the first: so a task whose plugin
// died mid-run is still found again by ID and cleaned up.
func retry[T any](p *Plugin, op string, call func() (T, uint64, error)) (T, error) {
	v, gen, err := call()
	if gen != 0 && p.diedDuring(gen, err) {
		p.logger.Info("plugin died during a call: making it again in the restarted plugin", "plugin", p.Name, "call", op, "err", err)
		v, _, err = call()
	}
	return v, err
}

// Status reports the container's state.
func (c *hostContainer) Status(ctx context.Context) (orchestra.ContainerStatus, error) {
	if err := c.driver.plugin.host.checkOpen(ctx, c.driver.plugin.Name); err != nil {
		return nil, err
	}
	// A finished task's status is final: it is answered from the client
	// layer's cache, without a call or a restart of a dead plugin.
	c.mu.Lock()
	inner := c.inner
	c.mu.Unlock()
	if st, ok := wire.FinalStatus(inner); ok {
		return st, nil
	}
	return retry(c.driver.plugin, "Status", func() (orchestra.ContainerStatus, uint64, error) {
		inner, gen, err := c.currentGen(ctx)
		if err != nil {
			return nil, 0, err
		}
		st, err := inner.Status(ctx)
		return st, gen, err
	})
}

// ID is the container's ID.
func (c *hostContainer) ID() string { return c.id }

// Logs writes the container's output from the start; with follow, live.
func (c *hostContainer) Logs(ctx context.Context, stdout, stderr io.Writer, follow bool) error {
	inner, err := c.current(ctx)
	if err != nil {
		return err
	}
	return inner.Logs(ctx, stdout, stderr, follow)
}

// Cleanup removes the container.
func (c *hostContainer) Cleanup(ctx context.Context) error {
	_, err := retry(c.driver.plugin, "Cleanup", func() (struct{}, uint64, error) {
		inner, gen, err := c.currentGen(ctx)
		if err != nil {
			return struct{}{}, 0, err
		}
		return struct{}{}, gen, inner.Cleanup(ctx)
	})
	return err
}

// hostVolume is the host side of a volume in a plugin, created again by name
// after a restart.
type hostVolume struct {
	driver *hostDriver
	name   string
	size   int
	path   string

	mu    sync.Mutex
	inner orchestra.Volume
	gen   uint64
}

// Name is the volume's name.
func (v *hostVolume) Name() string { return v.name }

// Path is where the plugin's driver said the volume is.
func (v *hostVolume) Path() string { return v.path }

// Cleanup removes the volume.
func (v *hostVolume) Cleanup(ctx context.Context) error {
	if err := v.driver.plugin.host.checkOpen(ctx, v.driver.plugin.Name); err != nil {
		return err
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if !v.driver.plugin.alive(v.gen) {
		inner, gen, err := v.driver.current(ctx)
		if err != nil {
			return err
		}
		nv, err := inner.CreateVolume(ctx, v.name, v.size)
		if err != nil {
			return fmt.Errorf("plugin %s restarted: volume %q: %w", v.driver.plugin.Name, v.name, err)
		}
		v.inner, v.gen = nv, gen
	}
	return v.inner.Cleanup(ctx)
}

// hostVolumeData is a driver whose plugin moves volume data, reopened in
// the running plugin like every call.
type hostVolumeData struct{ d *hostDriver }

var _ orchestra.VolumeDataAccessor = hostVolumeData{}

func (v hostVolumeData) accessor(ctx context.Context) (orchestra.VolumeDataAccessor, error) {
	inner, _, err := v.d.current(ctx)
	if err != nil {
		return nil, err
	}
	vd, ok := inner.(orchestra.VolumeDataAccessor)
	if !ok {
		return nil, fmt.Errorf("plugin %s restarted without volume data access: %w", v.d.plugin.Name, errors.ErrUnsupported)
	}
	return vd, nil
}

// CopyToVolume extracts a tar archive into the volume.
func (v hostVolumeData) CopyToVolume(ctx context.Context, volume string, r io.Reader) error {
	vd, err := v.accessor(ctx)
	if err != nil {
		return err
	}
	return vd.CopyToVolume(ctx, volume, r)
}

// CopyFromVolume is a tar archive of the volume.
func (v hostVolumeData) CopyFromVolume(ctx context.Context, volume string) (io.ReadCloser, error) {
	vd, err := v.accessor(ctx)
	if err != nil {
		return nil, err
	}
	return vd.CopyFromVolume(ctx, volume)
}

// ReadFilesFromVolume is a tar archive of paths in the volume.
func (v hostVolumeData) ReadFilesFromVolume(ctx context.Context, volume string, paths ...string) (io.ReadCloser, error) {
	vd, err := v.accessor(ctx)
	if err != nil {
		return nil, err
	}
	return vd.ReadFilesFromVolume(ctx, volume, paths...)
}

// hostSandboxDriver is a driver whose plugin starts sandboxes. A sandbox
// lives in its plugin process: one whose plugin died is gone, and its calls
// fail.
type hostSandboxDriver struct{ d *hostDriver }

var _ orchestra.SandboxDriver = hostSandboxDriver{}

// StartSandbox starts a sandbox in the running plugin.
func (s hostSandboxDriver) StartSandbox(ctx context.Context, task orchestra.Task) (orchestra.Sandbox, error) {
	inner, _, err := s.d.current(ctx)
	if err != nil {
		return nil, err
	}
	sd, ok := inner.(orchestra.SandboxDriver)
	if !ok {
		return nil, fmt.Errorf("plugin %s restarted without sandboxes: %w", s.d.plugin.Name, errors.ErrUnsupported)
	}
	return sd.StartSandbox(ctx, task)
}

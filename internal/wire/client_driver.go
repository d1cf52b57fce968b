package wire

import (
	"context"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jtarchie/pocketci/internal/secrets"
	"github.com/jtarchie/pocketci/orchestra"
	"github.com/jtarchie/pocketci/proto/driverv1"
)

// closeTimeout bounds Driver.Close, which has no context of its own.
const closeTimeout = 5 * time.Minute

// clientDriver is the host side of a driver instance in a plugin: an
// orchestra.Driver whose calls cross the wire. Its twin is the instance in
// server_handles.go.
type clientDriver struct {
	client     *Client
	handle     uint64
	name       string
	finder     bool     // a 1.3 plugin's driver finds containers by task ID
	implements []string // optional interfaces, as the plugin reported them
	secrets    []string // strings of the driver's config, kept out of errors

	closeOnce sync.Once
	closeErr  error

	// live are the Run streams and stdin connections open, ended when the
	// driver closes.
	mu     sync.Mutex
	live   map[*liveConn]struct{}
	closed bool
}

var _ orchestra.Driver = (*clientDriver)(nil)

// adopt builds the driver for an instance open in the plugin: with the
// optional interfaces its plugin's driver has, and only those.
func (c *Client) adopt(od OpenDriver, secrets []string) orchestra.Driver {
	d := &clientDriver{client: c, handle: od.Handle, name: od.Name,
		finder: od.ContainerFinder, implements: od.Implements, secrets: secrets}
	var vd orchestra.VolumeDataAccessor
	var sb orchestra.SandboxDriver
	if slices.Contains(od.Implements, ImplementsVolumeData) {
		vd = clientVolumeData{d}
	}
	if slices.Contains(od.Implements, ImplementsSandbox) {
		sb = clientSandboxDriver{d}
	}
	return Optional(d, vd, sb)
}

// Name is the driver's name as the plugin reports it.
func (d *clientDriver) Name() string { return d.name }

// Close closes the driver instance in the plugin, which removes every
// resource of its namespace, and ends its open streams. It is idempotent.
func (d *clientDriver) Close() error {
	d.closeOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
		defer cancel()
		_, err := d.client.rpc.Close(ctx, &driverv1.CloseRequest{Driver: d.handle})
		d.endLive()
		d.closeErr = d.wrap("Close", err)
	})
	return d.closeErr
}

// wrap names the plugin and the call in err, and keeps the driver's config
// out of it.
func (d *clientDriver) wrap(op string, err error) error {
	return secrets.Err(fromStatus(d.client.name, op, err), d.secrets)
}

// cleanup runs call, the plugin's cleanup of a container, volume or
// sandbox, until it succeeds once: the plugin then forgets the value, and
// cleaning it up again is a no-op here, as the contract asks.
func (d *clientDriver) cleanup(cleaned *atomic.Bool, op string, call func() error) error {
	if cleaned.Load() {
		return nil
	}
	if err := call(); err != nil {
		return d.wrap(op, err)
	}
	cleaned.Store(true)
	return nil
}

// CreateVolume creates or finds a volume in the plugin.
func (d *clientDriver) CreateVolume(ctx context.Context, name string, size int) (orchestra.Volume, error) {
	if err := orchestra.ValidateVolumeName(name); err != nil {
		return nil, d.client.fail("CreateVolume", err)
	}
	if size < 0 {
		return nil, fmt.Errorf("plugin %s: CreateVolume %q: size %d is negative: %w", d.client.name, name, size, orchestra.ErrInvalidTask)
	}
	ref, err := d.client.rpc.CreateVolume(ctx, &driverv1.CreateVolumeRequest{Driver: d.handle, Name: name, Size: int64(size)})
	if err != nil {
		return nil, d.wrap("CreateVolume", err)
	}
	if err := d.client.checkVolume(ref, name); err != nil {
		return nil, err
	}
	ref.Driver = d.handle
	return &clientVolume{driver: d, ref: ref}, nil
}

// RunContainer starts task in the plugin over a Run stream that lives as
// long as ctx. The task is validated first (orchestra.ValidateTask): a bad
// one never reaches the plugin. task.Stdin, when set, is streamed to the
// plugin while the task runs, past the end of ctx.
func (d *clientDriver) RunContainer(ctx context.Context, task orchestra.Task) (orchestra.Container, error) {
	if err := orchestra.ValidateTask(task); err != nil {
		return nil, d.client.fail("RunContainer", err)
	}
	if err := d.client.checkTaskSupported(task); err != nil {
		return nil, err
	}
	req := &driverv1.RunContainerRequest{Driver: d.handle, Task: taskToProto(task), DeadlineUnixNano: deadlineOf(ctx)}
	if err := d.client.checkTaskSize(req); err != nil {
		return nil, err
	}
	var stdin *liveConn
	if task.Stdin != nil {
		// The stdin connection opens before the task starts: a task whose
		// stdin cannot reach it never runs.
		var err error
		if stdin, err = d.sendStdin(req, task.Stdin); err != nil {
			return nil, fmt.Errorf("plugin %s: RunContainer: stdin: %w", d.client.name, err)
		}
	}
	c, err := d.run(ctx, req)
	if err != nil {
		stdin.end()
		return nil, err
	}
	c.stdin = stdin
	return c, nil
}

// GetContainer finds a container of this namespace by its ID. The error
// wraps orchestra.ErrContainerNotFound when there is none.
func (d *clientDriver) GetContainer(ctx context.Context, id string) (orchestra.Container, error) {
	if id == "" {
		return nil, fmt.Errorf("plugin %s: GetContainer: empty container ID: %w", d.client.name, orchestra.ErrContainerNotFound)
	}
	req, err := d.getContainerRequest(id)
	if err != nil {
		return nil, err
	}
	resp, err := d.client.rpc.GetContainer(ctx, req)
	if err != nil {
		return nil, d.wrap("GetContainer", err)
	}
	if err := d.client.checkContainer("GetContainer", resp); err != nil {
		return nil, err
	}
	return d.newContainer(resp, id), nil
}

// liveConn is a connection that lives past the call that opened it: a Run
// stream or a task's stdin. end closes it once.
type liveConn struct {
	once  sync.Once
	close func()
}

func (l *liveConn) end() {
	if l != nil {
		l.once.Do(l.close)
	}
}

// track registers conn as live, or closes it at once when the driver is
// closed.
func (d *clientDriver) track(conn io.Closer) (*liveConn, error) {
	l := &liveConn{}
	l.close = func() {
		conn.Close()
		d.mu.Lock()
		delete(d.live, l)
		d.mu.Unlock()
	}
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		conn.Close()
		return nil, fmt.Errorf("plugin %s: %w", d.client.name, orchestra.ErrClosed)
	}
	if d.live == nil {
		d.live = map[*liveConn]struct{}{}
	}
	d.live[l] = struct{}{}
	d.mu.Unlock()
	return l, nil
}

// endLive ends every live connection of the driver.
func (d *clientDriver) endLive() {
	d.mu.Lock()
	d.closed = true
	live := d.live
	d.live = nil
	d.mu.Unlock()
	for l := range live {
		l.end()
	}
}

// ImplementsOf lists the optional orchestra interfaces that the plugin's
// driver behind d, a driver of this client layer, implements.
func ImplementsOf(d orchestra.Driver) []string {
	if cd, ok := Base(d).(*clientDriver); ok {
		return cd.implements
	}
	return nil
}

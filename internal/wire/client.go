package wire

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	_ "google.golang.org/grpc/encoding/proto" // registers the codec logCodec wraps
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/jtarchie/pocketci/orchestra"
	"github.com/jtarchie/pocketci/pluginsdk/proto/driverv1"
)

// closeTimeout bounds Driver.Close, which has no context of its own.
const closeTimeout = 5 * time.Minute

// Client is the host half of the protocol: it speaks to one plugin process
// and opens orchestra drivers inside it. Its twin on the plugin side is
// server.go.
type Client struct {
	name string
	rpc  driverv1.DriverClient
	// bulk is the plugin's bulk socket, when stdin and logs go over it.
	bulk string
	// run is set when the plugin serves Run (capability "run", 1.3), as its
	// Info said.
	run bool
}

// NewClient wraps a connection to the plugin called name.
func NewClient(name string, rpc driverv1.DriverClient) *Client {
	return &Client{name: name, rpc: rpc}
}

// Info is what a plugin reports about itself.
type Info struct {
	Name            string   `json:"name"`
	PluginVersion   string   `json:"plugin_version"`
	SDKVersion      string   `json:"sdk_version"`
	ProtocolVersion string   `json:"protocol_version"`
	Capabilities    []string `json:"capabilities"`
	// BulkAddr is the plugin's bulk socket, with capability "bulk".
	BulkAddr string `json:"bulk_addr,omitempty"`
	// Goroutines is the plugin's goroutine count when it answered (1.3).
	Goroutines int64 `json:"goroutines,omitempty"`
}

// Info asks the plugin to describe itself.
func (c *Client) Info(ctx context.Context) (Info, error) {
	resp, err := c.rpc.Info(ctx, &driverv1.InfoRequest{})
	if err != nil {
		return Info{}, fromStatus(c.name, "Info", err)
	}
	c.run = slices.Contains(resp.GetCapabilities(), CapabilityRun)
	return Info{
		Name:            resp.GetName(),
		PluginVersion:   resp.GetPluginVersion(),
		SDKVersion:      resp.GetSdkVersion(),
		ProtocolVersion: resp.GetProtocolVersion(),
		Capabilities:    resp.GetCapabilities(),
		BulkAddr:        resp.GetBulkAddr(),
		Goroutines:      resp.GetGoroutines(),
	}, nil
}

// Open creates a driver instance for namespace inside the plugin. The result
// implements orchestra.ContainerFinder exactly when the plugin's driver does.
func (c *Client) Open(ctx context.Context, namespace string) (orchestra.Driver, error) {
	return c.open(ctx, &driverv1.OpenRequest{Namespace: namespace})
}

// OpenEphemeral is Open for a namespace that must not outlive its host:
// when the host dies without closing the driver, the plugin closes it, even
// one served with pluginsdk.KeepOnHostExit. A plugin without the
// "ephemeral" capability (before 1.3) ignores the mark and opens the
// namespace as Open does; Info's capabilities say which it is.
func (c *Client) OpenEphemeral(ctx context.Context, namespace string) (orchestra.Driver, error) {
	return c.open(ctx, &driverv1.OpenRequest{Namespace: namespace, Ephemeral: true})
}

func (c *Client) open(ctx context.Context, req *driverv1.OpenRequest) (orchestra.Driver, error) {
	namespace := req.GetNamespace()
	if err := orchestra.ValidateNamespace(namespace); err != nil {
		return nil, fmt.Errorf("plugin %s: Open: %w", c.name, err)
	}
	resp, err := c.rpc.Open(ctx, req)
	if err != nil {
		return nil, fromStatus(c.name, "Open", err)
	}
	if resp.GetDriver() == 0 {
		return nil, c.invalidReply("Open", "driver handle 0")
	}
	return c.Adopt(OpenDriver{Handle: resp.GetDriver(), Namespace: namespace, Name: resp.GetName(), ContainerFinder: resp.GetContainerFinder(), Implements: resp.GetImplements()}), nil
}

// driver is an orchestra.Driver whose instance lives in a plugin.
type driver struct {
	client    *Client
	handle    uint64
	name      string
	namespace string

	// stdinCtx outlives every RunContainer call: stdin keeps flowing after
	// RunContainer returns and after its ctx ends, until the driver closes.
	stdinCtx  context.Context
	stopStdin context.CancelFunc
	closeOnce sync.Once
	closeErr  error

	finder bool
	// follower is set once a container of this driver implemented
	// orchestra.LogFollower.
	follower atomic.Bool

	// runs are the open Run streams, ended when the driver closes.
	runsMu sync.Mutex
	runs   map[*runClient]struct{}
	closed bool
}

// track records an open Run stream; false once the driver is closed.
func (d *driver) track(r *runClient) bool {
	d.runsMu.Lock()
	defer d.runsMu.Unlock()
	if d.closed {
		return false
	}
	if d.runs == nil {
		d.runs = map[*runClient]struct{}{}
	}
	d.runs[r] = struct{}{}
	return true
}

func (d *driver) untrack(r *runClient) {
	d.runsMu.Lock()
	delete(d.runs, r)
	d.runsMu.Unlock()
}

// endRuns ends every open Run stream.
func (d *driver) endRuns() {
	d.runsMu.Lock()
	d.closed = true
	runs := d.runs
	d.runs = nil
	d.runsMu.Unlock()
	for r := range runs {
		r.cancel()
	}
}

// Name is the driver's name as the plugin reports it.
func (d *driver) Name() string { return d.name }

// Close closes the driver instance in the plugin, which removes every
// resource of its namespace. It is idempotent.
func (d *driver) Close() error {
	d.closeOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
		defer cancel()
		_, err := d.client.rpc.Close(ctx, &driverv1.CloseRequest{Driver: d.handle})
		d.endRuns()
		d.stopStdin()
		d.closeErr = d.wrap("Close", err)
	})
	return d.closeErr
}

func (d *driver) wrap(op string, err error) error {
	return fromStatus(d.client.name, op, err)
}

// CreateVolume creates or finds a volume in the plugin.
func (d *driver) CreateVolume(ctx context.Context, name string, size int) (orchestra.Volume, error) {
	if err := orchestra.ValidateVolumeName(name); err != nil {
		return nil, fmt.Errorf("plugin %s: CreateVolume: %w", d.client.name, err)
	}
	if size < 0 {
		return nil, fmt.Errorf("plugin %s: CreateVolume %q: size %d is negative: %w", d.client.name, name, size, orchestra.ErrInvalidTask)
	}
	ref, err := d.client.rpc.CreateVolume(ctx, &driverv1.CreateVolumeRequest{Driver: d.handle, Name: name, Size: int64(size)})
	if err != nil {
		return nil, d.wrap("CreateVolume", err)
	}
	if ref == nil || ref.GetVolume() == 0 {
		return nil, d.client.invalidReply("CreateVolume", "no volume handle")
	}
	if ref.GetName() != name {
		return nil, d.client.invalidReply("CreateVolume", "volume %q for a request of %q", ref.GetName(), name)
	}
	ref.Driver = d.handle
	return &volume{driver: d, ref: ref}, nil
}

// RunContainer starts task in the plugin. The task is validated first (see
// orchestra.ValidateTask): a bad one never reaches the plugin. When
// task.Stdin is set, it is streamed to the plugin in chunks while the task
// runs.
func (d *driver) RunContainer(ctx context.Context, task orchestra.Task) (orchestra.Container, error) {
	if err := orchestra.ValidateTask(task); err != nil {
		return nil, fmt.Errorf("plugin %s: RunContainer: %w", d.client.name, err)
	}
	req := &driverv1.RunContainerRequest{Driver: d.handle, Task: taskToProto(task)}
	if err := d.client.checkTaskSize(req); err != nil {
		return nil, err
	}
	stopStdin := func() {}
	if task.Stdin != nil {
		token, err := newToken()
		if err != nil {
			return nil, fmt.Errorf("plugin %s: RunContainer: %w", d.client.name, err)
		}
		req.StdinToken = token
		// The stdin stream outlives RunContainer's ctx, until the input ends,
		// the container is cleaned up or the driver closes. It opens before
		// the task starts: a task whose stdin cannot reach it never runs.
		stdinCtx, cancel := context.WithCancel(d.stdinCtx)
		sink, err := d.openStdin(stdinCtx, token)
		if err != nil {
			cancel()
			return nil, fmt.Errorf("plugin %s: RunContainer: stdin: %w", d.client.name, err)
		}
		go func() {
			defer cancel()
			copyStdin(sink, task.Stdin)
		}()
		stopStdin = cancel
	}
	var c *container
	var err error
	if d.client.run {
		c, err = d.runContainer(ctx, req)
	} else {
		var resp *driverv1.RunContainerResponse
		resp, err = d.client.rpc.RunContainer(ctx, req)
		if err != nil {
			err = d.wrap("RunContainer", err)
		} else if err = d.client.checkContainer("RunContainer", resp); err == nil {
			c = d.newContainer(resp)
		}
	}
	if err != nil {
		stopStdin()
		return nil, err
	}
	c.stopStdin = stopStdin
	return c.public(), nil
}

func newToken() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("stdin token: %w", err)
	}
	return hex.EncodeToString(b), nil
}

func (d *driver) newContainer(resp *driverv1.RunContainerResponse) *container {
	if resp.GetLogFollower() {
		d.follower.Store(true)
	}
	ref := resp.GetContainer()
	ref.Driver = d.handle
	return &container{driver: d, ref: ref, follower: resp.GetLogFollower()}
}

// public is the container as callers get it: with FollowLogs exactly when
// the plugin's container has it.
func (c *container) public() orchestra.Container {
	if c.follower {
		return &followContainer{c}
	}
	return c
}

// finderDriver is a driver whose plugin implements orchestra.ContainerFinder.
type finderDriver struct{ *driver }

// GetContainer finds a container of this namespace by task ID. The error
// wraps orchestra.ErrContainerNotFound when there is none.
func (d *finderDriver) GetContainer(ctx context.Context, taskID string) (orchestra.Container, error) {
	if err := orchestra.ValidateTaskID(taskID); err != nil {
		return nil, fmt.Errorf("plugin %s: GetContainer: %w", d.client.name, err)
	}
	resp, err := d.client.rpc.GetContainer(ctx, &driverv1.GetContainerRequest{Driver: d.handle, TaskId: taskID})
	if err != nil {
		return nil, d.wrap("GetContainer", err)
	}
	if err := d.client.checkContainer("GetContainer", resp); err != nil {
		return nil, err
	}
	return d.newContainer(resp).public(), nil
}

// container is an orchestra.Container that lives in a plugin. A finished
// status is cached: done is final, so polling it costs no RPC.
type container struct {
	driver   *driver
	ref      *driverv1.ContainerRef
	follower bool
	// run is the Run stream that started it, if any (protocol 1.3).
	run *runClient
	// stopStdin stops the task's stdin stream, on Cleanup.
	stopStdin func()
	// cleaned is set once Cleanup succeeded.
	cleaned atomic.Bool

	mu   sync.Mutex
	done *containerStatus
}

type containerStatus struct {
	done     bool
	exitCode int
}

func (s *containerStatus) IsDone() bool  { return s.done }
func (s *containerStatus) ExitCode() int { return s.exitCode }

// Status reports the container's state, from the cache once it is done.
func (c *container) Status(ctx context.Context) (orchestra.ContainerStatus, error) {
	c.mu.Lock()
	done := c.done
	c.mu.Unlock()
	if done != nil {
		return done, nil
	}
	resp, err := c.driver.client.rpc.Status(ctx, c.ref, logCallOption)
	if err != nil {
		return nil, c.driver.wrap("Status", err)
	}
	if err := c.driver.client.checkExitCode("Status", int64(resp.GetExitCode())); err != nil {
		return nil, err
	}
	st := &containerStatus{done: resp.GetDone(), exitCode: int(resp.GetExitCode())}
	if st.done {
		c.mu.Lock()
		c.done = st
		c.mu.Unlock()
	}
	return st, nil
}

// Logs streams the container's output from the start.
func (c *container) Logs(ctx context.Context, stdout, stderr io.Writer) error {
	return c.logs(ctx, false, stdout, stderr)
}

func (c *container) logs(ctx context.Context, follow bool, stdout, stderr io.Writer) error {
	op := "Logs"
	if follow {
		op = "FollowLogs"
	}
	// Logs (everything from the start, often large) goes over the bulk
	// socket; FollowLogs stays on the gRPC stream, whose connection already
	// exists: live output comes in small pieces, and a new connection per
	// follow costs short tasks more than the socket's speed gains them.
	if c.driver.client.bulk != "" && !follow {
		if err := c.bulkLogs(ctx, stdout, stderr, op); !errors.Is(err, errBulkUnreachable) {
			return err
		}
	}
	stream, err := c.driver.client.rpc.Logs(ctx, &driverv1.LogsRequest{Container: c.ref, Follow: follow}, logCallOption)
	if err != nil {
		return c.driver.wrap(op, err)
	}
	for {
		var chunk logChunk
		err := stream.RecvMsg(&chunk)
		if errors.Is(err, io.EOF) {
			if follow {
				c.cacheTrailer(stream.Trailer())
			}
			return nil
		}
		if err != nil {
			return c.driver.wrap(op, err)
		}
		if err := c.driver.client.checkStream(op, chunk.stream); err != nil {
			chunk.free()
			return err
		}
		w := stdout
		if chunk.stream == driverv1.LogChunk_STREAM_STDERR {
			w = stderr
		}
		_, err = w.Write(chunk.data)
		chunk.free()
		if err != nil {
			return fmt.Errorf("plugin %s: %s: write output: %w", c.driver.client.name, op, err)
		}
	}
}

// logChunk is a driverv1.LogChunk whose data aliases a pooled buffer, so
// that receiving logs allocates nothing per chunk: the generated message
// would copy every chunk into a fresh, zeroed slice. Release it with free.
type logChunk struct {
	stream driverv1.LogChunk_Stream
	data   []byte
	buf    mem.Buffer
}

func (c *logChunk) free() {
	if c.buf != nil {
		c.buf.Free()
	}
}

// logCodec is the proto codec, except that it decodes a *logChunk in
// place. It is set on the Logs call only, so the request still goes
// through the proto codec and the plugin sees nothing different.
type logCodec struct{ encoding.CodecV2 }

// logCallOption makes a Logs call decode into *logChunk.
var logCallOption = grpc.ForceCodecV2(logCodec{encoding.GetCodecV2(protoCodecName)})

// protoCodecName is the name of gRPC's proto codec, and so also the
// content-subtype ForceCodecV2 sends: the plugin decodes as usual.
const protoCodecName = "proto"

func (c logCodec) Name() string { return protoCodecName }

func (c logCodec) Unmarshal(data mem.BufferSlice, v any) error {
	if st, ok := v.(*driverv1.StatusResponse); ok {
		b := data.Materialize()
		if err := checkRawExitCode(b, 2); err != nil {
			return err
		}
		return proto.Unmarshal(b, st)
	}
	if ev, ok := v.(*runEvent); ok {
		return ev.decode(data.MaterializeToBuffer(mem.DefaultBufferPool()))
	}
	chunk, ok := v.(*logChunk)
	if !ok {
		return c.CodecV2.Unmarshal(data, v)
	}
	buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
	if err := chunk.decode(buf.ReadOnlyData()); err != nil {
		buf.Free()
		return err
	}
	chunk.buf = buf
	return nil
}

// decode parses the wire form of driverv1.LogChunk, keeping data as a
// sub-slice of b. Unknown fields, which a later minor version may add, are
// skipped.
func (c *logChunk) decode(b []byte) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return fmt.Errorf("log chunk: %w", protowire.ParseError(n))
		}
		b = b[n:]
		switch {
		case num == 1 && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return fmt.Errorf("log chunk stream: %w", protowire.ParseError(n))
			}
			c.stream = driverv1.LogChunk_Stream(v)
			b = b[n:]
		case num == 2 && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return fmt.Errorf("log chunk data: %w", protowire.ParseError(n))
			}
			c.data = v
			b = b[n:]
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return fmt.Errorf("log chunk field %d: %w", num, protowire.ParseError(n))
			}
			b = b[n:]
		}
	}
	return nil
}

// cacheTrailer caches the final status a FollowLogs stream carries in its
// trailer (see statusTrailer), so the Status that follows costs no RPC.
func (c *container) cacheTrailer(md metadata.MD) {
	v := md.Get(statusTrailer)
	if len(v) != 1 {
		return
	}
	code, err := strconv.Atoi(v[0])
	if err != nil || code < 0 || code > 255 {
		// Not cached: Status asks the plugin, and checks what it says.
		return
	}
	c.cacheExit(code)
}

// cacheExit records the final exit code of a followed container.
func (c *container) cacheExit(code int) {
	c.mu.Lock()
	if c.done == nil {
		c.done = &containerStatus{done: true, exitCode: code}
	}
	c.mu.Unlock()
}

// Cleanup removes the container in the plugin, and ends the Run stream
// that started it.
//
// The plugin forgets a container once it is cleaned up; cleaning it up again
// is a no-op here, as the contract asks (it is idempotent).
func (c *container) Cleanup(ctx context.Context) error {
	if c.cleaned.Load() {
		return nil
	}
	if c.stopStdin != nil {
		defer c.stopStdin()
	}
	var err error
	if c.run.acquire() {
		err = c.cleanupRun(ctx)
	} else {
		if c.run != nil {
			defer c.run.end()
		}
		err = c.cleanupUnary(ctx)
	}
	if err == nil {
		c.cleaned.Store(true)
	}
	return err
}

func (c *container) cleanupUnary(ctx context.Context) error {
	_, err := c.driver.client.rpc.Cleanup(ctx, c.ref)
	return c.driver.wrap("Cleanup", err)
}

// followContainer is a container whose driver implements orchestra.LogFollower.
type followContainer struct{ *container }

// FollowLogs streams the container's output live until it exits.
func (c *followContainer) FollowLogs(ctx context.Context, stdout, stderr io.Writer) error {
	if c.run.acquire() {
		return c.followRun(ctx, stdout, stderr)
	}
	return c.logs(ctx, true, stdout, stderr)
}

// volume is an orchestra.Volume that lives in a plugin.
type volume struct {
	driver  *driver
	ref     *driverv1.VolumeRef
	cleaned atomic.Bool
}

// Name is the volume's name.
func (v *volume) Name() string { return v.ref.GetName() }

// Cleanup removes the volume in the plugin.
// The plugin forgets the volume's handle once it is removed; removing it
// again is a no-op here (it is idempotent).
func (v *volume) Cleanup(ctx context.Context) error {
	if v.cleaned.Load() {
		return nil
	}
	_, err := v.driver.client.rpc.CleanupVolume(ctx, v.ref)
	if err == nil {
		v.cleaned.Store(true)
	}
	return v.driver.wrap("CleanupVolume", err)
}

// OpenDriver is a driver instance a plugin kept open while its host was
// away; see Client.Attach and Client.Adopt.
type OpenDriver struct {
	Handle          uint64
	Namespace       string
	Name            string
	ContainerFinder bool
	// Implements lists the optional orchestra interfaces the driver
	// implements, as the plugin reports them (1.3; empty before).
	Implements []string
}

// Detach tells the plugin that the host exits on purpose and will attach
// again within timeout: the plugin keeps running and keeps its drivers open.
// It needs the plugin's "detach" capability (protocol 1.1).
func (c *Client) Detach(ctx context.Context, timeout time.Duration) error {
	_, err := c.rpc.Detach(ctx, &driverv1.DetachRequest{TimeoutSeconds: int64(max(timeout/time.Second, 1))})
	return fromStatus(c.name, "Detach", err)
}

// Attach makes hostPID the plugin's host and returns the drivers it kept
// open, for Adopt.
func (c *Client) Attach(ctx context.Context, hostPID int) ([]OpenDriver, error) {
	resp, err := c.rpc.Attach(ctx, &driverv1.AttachRequest{HostPid: int64(hostPID)})
	if err != nil {
		return nil, fromStatus(c.name, "Attach", err)
	}
	var out []OpenDriver
	for _, d := range resp.GetDrivers() {
		out = append(out, OpenDriver{Handle: d.GetDriver(), Namespace: d.GetNamespace(), Name: d.GetName(), ContainerFinder: d.GetContainerFinder(), Implements: d.GetImplements()})
	}
	return out, nil
}

// Adopt returns the driver for an instance that is already open in the
// plugin, as Open would have.
func (c *Client) Adopt(od OpenDriver) orchestra.Driver {
	d := &driver{client: c, handle: od.Handle, name: od.Name, namespace: od.Namespace, finder: od.ContainerFinder}
	d.stdinCtx, d.stopStdin = context.WithCancel(context.Background())
	if od.ContainerFinder {
		return &finderDriver{d}
	}
	return d
}

// Implements lists the optional orchestra interfaces that d, a driver from
// Client.Open or Client.Adopt, implements: "ContainerFinder" as the plugin
// reported at Open, and "LogFollower" once a container d returned had
// FollowLogs (the contract makes it a property of each container, so it is
// known only after the first RunContainer or GetContainer). It returns nil
// for any other driver.
func Implements(d orchestra.Driver) []string {
	var wd *driver
	switch d := d.(type) {
	case *driver:
		wd = d
	case *finderDriver:
		wd = d.driver
	default:
		return nil
	}
	var out []string
	if wd.finder {
		out = append(out, "ContainerFinder")
	}
	if wd.follower.Load() {
		out = append(out, "LogFollower")
	}
	return out
}

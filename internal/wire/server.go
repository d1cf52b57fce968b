package wire

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	_ "google.golang.org/grpc/encoding/proto" // registers the codec stdinCodec wraps
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/jtarchie/pocketci/orchestra"
	"github.com/jtarchie/pocketci/pluginsdk/proto/driverv1"
)

// server is the plugin half of the protocol: it serves the driver instances
// of one plugin process. Its twin on the host side is client.go.
type server struct {
	driverv1.UnimplementedDriverServer

	name    string
	version string
	init    orchestra.InitFunc
	logger  *slog.Logger

	watch  hostWatch
	logOut *logOutput
	// bulkAddr is the bulk socket's path, when it listens (bulk_server.go).
	bulkAddr string

	mu      sync.Mutex
	nextID  uint64
	drivers map[uint64]*instance
	stdins  map[string]*stdinPipe
}

// instance is one driver opened for a namespace, with the handles given out
// for its containers and volumes.
type instance struct {
	driver    orchestra.Driver
	namespace string
	finder    bool

	mu         sync.Mutex
	containers map[uint64]*served
	byTask     map[string]uint64
	volumes    map[uint64]orchestra.Volume
}

// served is a container handed to the host, with the stdin pipe feeding it.
type served struct {
	container orchestra.Container
	taskID    string
	stdin     *stdinPipe
}

// stdinPipe connects a WriteStdin stream to a task's Stdin reader. Whichever
// of RunContainer and WriteStdin comes first creates it.
type stdinPipe struct {
	r *io.PipeReader
	w *io.PipeWriter
}

// NewServer returns the driver service that Serve registers, for a program
// that runs its own gRPC server (a test, or a host embedding a plugin). Most
// plugins want Serve.
func NewServer(name string, init orchestra.InitFunc, logger *slog.Logger) driverv1.DriverServer {
	return newServer(name, version(), init, logger)
}

func newServer(name, version string, init orchestra.InitFunc, logger *slog.Logger) *server {
	return &server{
		name:    name,
		version: version,
		init:    init,
		logger:  logger,
		drivers: map[uint64]*instance{},
		stdins:  map[string]*stdinPipe{},
		watch:   hostWatch{parent: os.Getppid()},
		logOut:  &logOutput{w: os.Stderr},
	}
}

func (s *server) Info(context.Context, *driverv1.InfoRequest) (*driverv1.InfoResponse, error) {
	return &driverv1.InfoResponse{
		Name:            s.name,
		PluginVersion:   s.version,
		SdkVersion:      SDKVersion,
		ProtocolVersion: ProtocolVersion,
		Capabilities:    s.capabilities(),
		BulkAddr:        s.bulkAddr,
	}, nil
}

// capabilities are the SDK's, with "bulk" when the bulk socket listens.
func (s *server) capabilities() []string {
	if s.bulkAddr == "" {
		return sdkCapabilities
	}
	return append(append([]string(nil), sdkCapabilities...), CapabilityBulk)
}

func (s *server) Open(_ context.Context, req *driverv1.OpenRequest) (*driverv1.OpenResponse, error) {
	logger := s.logger.With("namespace", req.GetNamespace())
	driver, err := s.init(req.GetNamespace(), logger)
	if err != nil {
		return nil, toStatus(fmt.Errorf("open driver for namespace %q: %w", req.GetNamespace(), err))
	}
	if driver == nil {
		return nil, status.Errorf(codes.Internal, "driver init for namespace %q returned no driver and no error", req.GetNamespace())
	}
	_, finder := driver.(orchestra.ContainerFinder)
	s.mu.Lock()
	s.nextID++
	id := s.nextID
	s.drivers[id] = &instance{
		driver:     driver,
		namespace:  req.GetNamespace(),
		finder:     finder,
		containers: map[uint64]*served{},
		byTask:     map[string]uint64{},
		volumes:    map[uint64]orchestra.Volume{},
	}
	s.mu.Unlock()
	return &driverv1.OpenResponse{Driver: id, Name: driver.Name(), ContainerFinder: finder, Implements: implements(finder)}, nil
}

// implements lists the optional interfaces a driver implements, for
// OpenResponse.implements.
func implements(finder bool) []string {
	if finder {
		return []string{"ContainerFinder"}
	}
	return nil
}

func (s *server) Close(_ context.Context, req *driverv1.CloseRequest) (*driverv1.CloseResponse, error) {
	s.mu.Lock()
	inst, ok := s.drivers[req.GetDriver()]
	delete(s.drivers, req.GetDriver())
	s.mu.Unlock()
	if !ok {
		// Close is idempotent: a driver closed before is closed still.
		return &driverv1.CloseResponse{}, nil
	}
	return &driverv1.CloseResponse{}, toStatus(inst.close())
}

// closeAll closes every open driver instance; the plugin calls it when its
// host is gone.
func (s *server) closeAll() {
	s.mu.Lock()
	drivers := s.drivers
	s.drivers = map[uint64]*instance{}
	s.mu.Unlock()
	for id, inst := range drivers {
		if err := inst.close(); err != nil {
			s.logger.Error("close driver", "driver", id, "err", err)
		}
	}
}

func (inst *instance) close() error {
	inst.mu.Lock()
	for _, c := range inst.containers {
		c.closeStdin(orchestra.ErrClosed)
	}
	inst.mu.Unlock()
	return inst.driver.Close()
}

func (c *served) closeStdin(err error) {
	if c.stdin != nil {
		c.stdin.r.CloseWithError(err)
	}
}

func (s *server) instance(id uint64) (*instance, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	inst, ok := s.drivers[id]
	if !ok {
		return nil, toStatus(fmt.Errorf("driver handle %d is not open: %w", id, orchestra.ErrClosed))
	}
	return inst, nil
}

func (s *server) container(ref *driverv1.ContainerRef) (*served, error) {
	inst, err := s.instance(ref.GetDriver())
	if err != nil {
		return nil, err
	}
	inst.mu.Lock()
	defer inst.mu.Unlock()
	c, ok := inst.containers[ref.GetContainer()]
	if !ok {
		return nil, toStatus(fmt.Errorf("container handle %d (task %q): %w", ref.GetContainer(), ref.GetTaskId(), orchestra.ErrContainerNotFound))
	}
	return c, nil
}

// stdinPipe returns the pipe for token, creating it.
func (s *server) stdinPipe(token string) *stdinPipe {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.stdins[token]
	if !ok {
		r, w := io.Pipe()
		p = &stdinPipe{r: r, w: w}
		s.stdins[token] = p
	}
	return p
}

func (s *server) dropStdin(token string) {
	s.mu.Lock()
	delete(s.stdins, token)
	s.mu.Unlock()
}

func (s *server) RunContainer(ctx context.Context, req *driverv1.RunContainerRequest) (*driverv1.RunContainerResponse, error) {
	inst, err := s.instance(req.GetDriver())
	if err != nil {
		return nil, err
	}
	task := taskFromProto(req.GetTask())
	var pipe *stdinPipe
	if token := req.GetStdinToken(); token != "" {
		pipe = s.stdinPipe(token)
		task.Stdin = pipe.r
	}
	container, err := inst.driver.RunContainer(ctx, task)
	if err != nil {
		if pipe != nil {
			pipe.r.CloseWithError(err)
			s.dropStdin(req.GetStdinToken())
		}
		return nil, toStatus(err)
	}
	return inst.serve(container, task.ID, pipe), nil
}

// serve gives container a handle. A task ID seen before keeps its handle, and
// a stdin meant for a container that already existed is closed: the driver
// did not run the command again, so nothing will read it.
func (inst *instance) serve(container orchestra.Container, taskID string, pipe *stdinPipe) *driverv1.RunContainerResponse {
	_, follower := container.(orchestra.LogFollower)
	inst.mu.Lock()
	defer inst.mu.Unlock()
	id, seen := inst.byTask[taskID]
	if seen {
		if pipe != nil {
			pipe.r.CloseWithError(fmt.Errorf("task %q already ran: stdin not read", taskID))
		}
		inst.containers[id].container = container
	} else {
		id = uint64(len(inst.containers)) + 1
		for inst.containers[id] != nil {
			id++
		}
		inst.containers[id] = &served{container: container, taskID: taskID, stdin: pipe}
		inst.byTask[taskID] = id
	}
	return &driverv1.RunContainerResponse{
		Container:   &driverv1.ContainerRef{Container: id, TaskId: taskID},
		LogFollower: follower,
	}
}

func (s *server) WriteStdin(stream driverv1.Driver_WriteStdinServer) error {
	first := newStdinChunk()
	if err := stream.RecvMsg(first); err != nil {
		return status.Errorf(codes.InvalidArgument, "stdin stream ended before its first chunk: %v", err)
	}
	token := first.GetToken()
	if token == "" {
		first.free()
		return status.Error(codes.InvalidArgument, "stdin stream: first chunk has no token")
	}
	pipe := s.stdinPipe(token)
	defer s.dropStdin(token)
	chunk := first
	for {
		if data := chunk.GetData(); len(data) > 0 {
			_, err := pipe.w.Write(data)
			chunk.free()
			if err != nil {
				// The reader is gone (the task exited or was cleaned up):
				// the rest of the input has nowhere to go.
				return stream.SendAndClose(&driverv1.WriteStdinResponse{})
			}
		}
		chunk = newStdinChunk()
		err := stream.RecvMsg(chunk)
		if errors.Is(err, io.EOF) {
			pipe.w.Close()
			return stream.SendAndClose(&driverv1.WriteStdinResponse{})
		}
		if err != nil {
			pipe.w.CloseWithError(fmt.Errorf("stdin stream from host: %w", err))
			return err
		}
	}
}

// stdinChunk is a StdinChunk that stdinCodec decodes in place: its Data
// aliases a pooled buffer, released with free once the pipe took it, so
// that receiving stdin allocates nothing per chunk. Under any other codec
// (a gRPC server built without ServerCodec) the embedded message is decoded
// the usual way.
type stdinChunk struct {
	*driverv1.StdinChunk
	buf mem.Buffer
}

func newStdinChunk() *stdinChunk { return &stdinChunk{StdinChunk: &driverv1.StdinChunk{}} }

func (c *stdinChunk) free() {
	if c.buf != nil {
		c.buf.Free()
		c.buf = nil
	}
}

// ServerCodec is the gRPC server option Serve uses: gRPC's proto codec,
// except that stdin chunks are decoded without a copy. A program serving
// NewServer on its own gRPC server may add it; without it, stdin works the
// same, with one allocation per chunk.
func ServerCodec() grpc.ServerOption {
	return grpc.ForceServerCodecV2(stdinCodec{encoding.GetCodecV2("proto")})
}

type stdinCodec struct{ encoding.CodecV2 }

// Marshal hands a log chunk's ready wire form to gRPC, which frees it into
// the pool once written; anything else is marshalled by the proto codec.
func (c stdinCodec) Marshal(v any) (mem.BufferSlice, error) {
	m, ok := v.(builtMessage)
	if !ok {
		return c.CodecV2.Marshal(v)
	}
	w := m.built()
	wire := (*w.buf)[:w.end]
	w.taken = true
	return mem.BufferSlice{mem.NewBuffer(&wire, chunkPool)}, nil
}

func (c stdinCodec) Unmarshal(data mem.BufferSlice, v any) error {
	chunk, ok := v.(*stdinChunk)
	if !ok {
		return c.CodecV2.Unmarshal(data, v)
	}
	buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
	if err := decodeStdinChunk(buf.ReadOnlyData(), chunk.StdinChunk); err != nil {
		buf.Free()
		return err
	}
	chunk.buf = buf
	return nil
}

// decodeStdinChunk parses the wire form of StdinChunk into m, with m.Data a
// sub-slice of b. Unknown fields, which a later minor version may add, are
// skipped.
func decodeStdinChunk(b []byte, m *driverv1.StdinChunk) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return fmt.Errorf("stdin chunk: %w", protowire.ParseError(n))
		}
		b = b[n:]
		if typ == protowire.BytesType && (num == 1 || num == 2) {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return fmt.Errorf("stdin chunk field %d: %w", num, protowire.ParseError(n))
			}
			if num == 1 {
				m.Token = string(v)
			} else {
				m.Data = v
			}
			b = b[n:]
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return fmt.Errorf("stdin chunk field %d: %w", num, protowire.ParseError(n))
		}
		b = b[n:]
	}
	return nil
}

func (s *server) GetContainer(ctx context.Context, req *driverv1.GetContainerRequest) (*driverv1.RunContainerResponse, error) {
	inst, err := s.instance(req.GetDriver())
	if err != nil {
		return nil, err
	}
	finder, ok := inst.driver.(orchestra.ContainerFinder)
	if !ok {
		return nil, status.Errorf(codes.Unimplemented, "driver %s does not implement orchestra.ContainerFinder", s.name)
	}
	container, err := finder.GetContainer(ctx, req.GetTaskId())
	if err != nil {
		return nil, toStatus(err)
	}
	return inst.serve(container, req.GetTaskId(), nil), nil
}

func (s *server) Status(ctx context.Context, ref *driverv1.ContainerRef) (*driverv1.StatusResponse, error) {
	c, err := s.container(ref)
	if err != nil {
		return nil, err
	}
	st, err := c.container.Status(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	if st == nil {
		return nil, status.Errorf(codes.Internal, "driver %s returned a nil status for task %q", s.name, c.taskID)
	}
	return &driverv1.StatusResponse{Done: st.IsDone(), ExitCode: int32(st.ExitCode())}, nil
}

func (s *server) Logs(req *driverv1.LogsRequest, stream driverv1.Driver_LogsServer) error {
	out := newChunkSender(stream, req.GetFollow())
	stdout, stderr := out.writer(driverv1.LogChunk_STREAM_STDOUT), out.writer(driverv1.LogChunk_STREAM_STDERR)
	c, err := s.logs(stream.Context(), req, stdout, stderr)
	if ferr := out.flush(); err == nil {
		err = ferr
	}
	if err == nil && req.GetFollow() {
		trailStatus(stream, c)
	}
	return toStatus(err)
}

// logs writes the output of the container req names to stdout and stderr:
// Logs, or FollowLogs when req.Follow is set. Both the gRPC stream and the
// bulk socket serve logs through it.
func (s *server) logs(ctx context.Context, req *driverv1.LogsRequest, stdout, stderr io.Writer) (*served, error) {
	c, err := s.container(req.GetContainer())
	if err != nil {
		return nil, err
	}
	if !req.GetFollow() {
		return c, c.container.Logs(ctx, stdout, stderr)
	}
	follower, ok := c.container.(orchestra.LogFollower)
	if !ok {
		return nil, status.Errorf(codes.Unimplemented, "container of task %q does not implement orchestra.LogFollower", c.taskID)
	}
	return c, follower.FollowLogs(ctx, stdout, stderr)
}

// statusTrailer is the trailer key in which a FollowLogs stream carries the
// exit code of the container it followed to its end. The host caches it as
// the final status, which saves the Status call that usually comes next.
// Hosts that do not know the key ignore it.
const statusTrailer = "pocketci-exit-code"

// trailStatus puts the container's final status in the stream's trailer. A
// followed container has exited, so this is the Status the host would ask
// for next; when the driver does not report it done, nothing is sent.
func trailStatus(stream driverv1.Driver_LogsServer, c *served) {
	if code, ok := c.finalStatus(stream.Context()); ok {
		stream.SetTrailer(metadata.Pairs(statusTrailer, strconv.Itoa(code)))
	}
}

// finalStatus is the exit code of a container that is done.
func (c *served) finalStatus(ctx context.Context) (int, bool) {
	st, err := c.container.Status(ctx)
	if err != nil || st == nil || !st.IsDone() {
		return 0, false
	}
	return st.ExitCode(), true
}

func (s *server) Cleanup(ctx context.Context, ref *driverv1.ContainerRef) (*driverv1.CleanupResponse, error) {
	c, err := s.container(ref)
	if err != nil {
		return nil, err
	}
	c.closeStdin(fmt.Errorf("task %q cleaned up", c.taskID))
	return &driverv1.CleanupResponse{}, toStatus(c.container.Cleanup(ctx))
}

func (s *server) CreateVolume(ctx context.Context, req *driverv1.CreateVolumeRequest) (*driverv1.VolumeRef, error) {
	inst, err := s.instance(req.GetDriver())
	if err != nil {
		return nil, err
	}
	vol, err := inst.driver.CreateVolume(ctx, req.GetName(), int(req.GetSize()))
	if err != nil {
		return nil, toStatus(err)
	}
	inst.mu.Lock()
	defer inst.mu.Unlock()
	id := uint64(len(inst.volumes)) + 1
	for inst.volumes[id] != nil {
		id++
	}
	inst.volumes[id] = vol
	return &driverv1.VolumeRef{Volume: id, Name: vol.Name()}, nil
}

func (s *server) CleanupVolume(ctx context.Context, ref *driverv1.VolumeRef) (*driverv1.CleanupResponse, error) {
	inst, err := s.instance(ref.GetDriver())
	if err != nil {
		return nil, err
	}
	inst.mu.Lock()
	vol, ok := inst.volumes[ref.GetVolume()]
	inst.mu.Unlock()
	if !ok {
		return nil, toStatus(fmt.Errorf("volume handle %d (%q): %w", ref.GetVolume(), ref.GetName(), orchestra.ErrVolumeNotFound))
	}
	return &driverv1.CleanupResponse{}, toStatus(vol.Cleanup(ctx))
}

func taskFromProto(t *driverv1.Task) orchestra.Task {
	task := orchestra.Task{
		Command:         t.GetCommand(),
		ContainerLimits: orchestra.ContainerLimits{CPU: t.GetCpu(), Memory: t.GetMemory()},
		Env:             t.GetEnv(),
		ID:              t.GetId(),
		Image:           t.GetImage(),
		Privileged:      t.GetPrivileged(),
		User:            t.GetUser(),
	}
	if task.Env == nil {
		task.Env = map[string]string{}
	}
	for _, m := range t.GetMounts() {
		task.Mounts = append(task.Mounts, orchestra.Mount{Name: m.GetName(), Path: m.GetPath()})
	}
	return task
}

func taskToProto(t orchestra.Task) *driverv1.Task {
	pt := &driverv1.Task{
		Command:    t.Command,
		Cpu:        t.ContainerLimits.CPU,
		Memory:     t.ContainerLimits.Memory,
		Env:        t.Env,
		Id:         t.ID,
		Image:      t.Image,
		Privileged: t.Privileged,
		User:       t.User,
	}
	for _, m := range t.Mounts {
		pt.Mounts = append(pt.Mounts, &driverv1.Mount{Name: m.Name, Path: m.Path})
	}
	return pt
}

// chunkSender turns a driver's writes to stdout and stderr into LogChunk
// messages. Without follow it coalesces small writes into chunks of up to
// chunkSize; with follow it sends each write at once so output is live.
//
// It copies writes straight into the wire form of a LogChunk, in a pooled
// buffer that gRPC takes over and returns to the pool once written (see
// wireChunk), so a chunk is copied once on its way to the socket, not twice.
type chunkSender struct {
	mu     sync.Mutex
	stream msgSender
	follow bool
	// run sends RunEvent output events (a Run stream) instead of LogChunks.
	run  bool
	bufs [3]*wireChunk
	err  error
}

// msgSender is the sending half of a gRPC stream.
type msgSender interface{ SendMsg(any) error }

func newChunkSender(stream msgSender, follow bool) *chunkSender {
	return &chunkSender{stream: stream, follow: follow}
}

func (c *chunkSender) writer(stream driverv1.LogChunk_Stream) io.Writer {
	return streamWriter{c, stream}
}

type streamWriter struct {
	c      *chunkSender
	stream driverv1.LogChunk_Stream
}

func (w streamWriter) Write(p []byte) (int, error) {
	w.c.mu.Lock()
	defer w.c.mu.Unlock()
	if w.c.err != nil {
		return 0, w.c.err
	}
	n := len(p)
	for len(p) > 0 {
		buf := w.c.bufs[w.stream]
		if buf == nil {
			size := chunkSize - runPrefix - wireHeader - wireFooter
			if w.c.follow {
				// Sent at once: a buffer the size of the write will do.
				size = min(len(p), size)
			}
			buf = newWireChunk(w.stream, size, w.c.run)
			w.c.bufs[w.stream] = buf
		}
		p = p[buf.fill(p):]
		if buf.full() || w.c.follow {
			if err := w.c.sendLocked(w.stream); err != nil {
				return 0, err
			}
		}
	}
	return n, nil
}

// sendLocked sends what is buffered for stream.
func (c *chunkSender) sendLocked(stream driverv1.LogChunk_Stream) error {
	buf := c.bufs[stream]
	if buf == nil || buf.empty() {
		return nil
	}
	c.bufs[stream] = nil
	err := c.stream.SendMsg(buf.message())
	buf.release()
	if err != nil {
		c.err = fmt.Errorf("send logs to host: %w", err)
		return c.err
	}
	return nil
}

func (c *chunkSender) flush() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		for i, buf := range c.bufs {
			if buf != nil {
				buf.release()
				c.bufs[i] = nil
			}
		}
		return c.err
	}
	for _, s := range []driverv1.LogChunk_Stream{driverv1.LogChunk_STREAM_STDOUT, driverv1.LogChunk_STREAM_STDERR} {
		if err := c.sendLocked(s); err != nil {
			return err
		}
	}
	return nil
}

// wireChunk is a LogChunk being built in its wire form: the data field's
// tag, its length as a varint padded to lenBytes (a valid, non-minimal
// varint, so the header is written before the length is known), the data,
// then the stream field.
//
// A chunk for a Run stream is the output field of a RunEvent: the same
// LogChunk after runPrefix bytes that hold the field's tag and padded length.
type wireChunk struct {
	buf    *[]byte
	n      int // data bytes
	size   int // room for data
	prefix int // runPrefix for a RunEvent, else 0
	stream driverv1.LogChunk_Stream
	// end is where the wire form ends, once message built it.
	end int
	// taken is set when the codec handed buf to gRPC, which frees it.
	taken bool
}

const (
	lenBytes   = 4 // a varint of 4 bytes holds up to 2^28-1, far above chunkSize
	wireHeader = 1 + lenBytes
	wireFooter = 2 // the stream field: tag and a one-byte varint
	runPrefix  = 1 + lenBytes
	// framing is the most a chunk adds to its data.
	framing = runPrefix + wireHeader + wireFooter
)

// chunkPool holds the buffers log chunks are built in. Its sizes are the
// sizes drivers write in (io.Copy's 32 KiB and other powers of two) plus a
// chunk's framing, and a full chunk: gRPC's default pool rounds 32 KiB and 7
// bytes up to 1 MiB, so 200 tasks followed at once held 750 MiB in the
// plugin, most of it empty.
var chunkPool = mem.NewTieredBufferPool(
	256,
	4<<10+framing,
	16<<10+framing,
	32<<10+framing,
	64<<10+framing,
	256<<10+framing,
	chunkSize,
)

// newWireChunk returns a chunk with room for size bytes of data, for a Run
// stream when run is set.
func newWireChunk(stream driverv1.LogChunk_Stream, size int, run bool) *wireChunk {
	w := &wireChunk{size: size, stream: stream}
	if run {
		w.prefix = runPrefix
	}
	w.buf = chunkPool.Get(w.prefix + wireHeader + size + wireFooter)
	return w
}

func (w *wireChunk) fill(p []byte) int {
	start := w.prefix + wireHeader
	k := copy((*w.buf)[start+w.n:start+w.size], p)
	w.n += k
	return k
}

func (w *wireChunk) full() bool  { return w.n == w.size }
func (w *wireChunk) empty() bool { return w.n == 0 }

// message returns what to send: a *wireLogChunk (or, for a Run stream, a
// *wireRunEvent), which ServerCodec sends as is and any other codec
// marshals from its message.
func (w *wireChunk) message() any {
	b := *w.buf
	p := w.prefix
	putField(b[p:], 2, w.n)
	end := p + wireHeader + w.n
	b[end] = byte(protowire.EncodeTag(1, protowire.VarintType))
	b[end+1] = byte(w.stream)
	w.end = end + wireFooter
	chunk := &driverv1.LogChunk{Stream: w.stream, Data: b[p+wireHeader : end]}
	if p == 0 {
		return &wireLogChunk{LogChunk: chunk, chunk: w}
	}
	putField(b, 2, w.end-runPrefix)
	return &wireRunEvent{RunEvent: &driverv1.RunEvent{Kind: &driverv1.RunEvent_Output{Output: chunk}}, chunk: w}
}

// putField writes the tag of bytes field num and the length n as a varint
// padded to lenBytes.
func putField(b []byte, num protowire.Number, n int) {
	b[0] = byte(protowire.EncodeTag(num, protowire.BytesType))
	v := uint64(n)
	for i := 1; i < lenBytes; i++ {
		b[i] = byte(v&0x7f) | 0x80
		v >>= 7
	}
	b[lenBytes] = byte(v)
}

// release returns the buffer to the pool unless gRPC took it.
func (w *wireChunk) release() {
	if !w.taken {
		chunkPool.Put(w.buf)
	}
	w.buf = nil
}

// wireLogChunk is a LogChunk whose wire form is already built.
type wireLogChunk struct {
	*driverv1.LogChunk
	chunk *wireChunk
}

// wireRunEvent is a RunEvent with output whose wire form is already built.
type wireRunEvent struct {
	*driverv1.RunEvent
	chunk *wireChunk
}

func (m *wireLogChunk) built() *wireChunk { return m.chunk }
func (m *wireRunEvent) built() *wireChunk { return m.chunk }

// builtMessage is a message whose wire form is built (see wireChunk).
type builtMessage interface{ built() *wireChunk }

package wire

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/mem"
	grpcstatus "google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/jtarchie/pocketci/orchestra"
	"github.com/jtarchie/pocketci/pluginsdk/proto/driverv1"
)

// The host's half of the Run stream (protocol 1.3; its twin is
// server_run.go). RunContainer opens the stream with the caller's context,
// so the driver in the plugin gets a context that ends when the caller's
// does and carries its deadline. The stream then carries FollowLogs (the
// output and the exit code, so a followed task needs no other call) and
// Cleanup; the host ends it when the container is cleaned up or the driver
// closes.

// deadlineGrace is how long after its caller's deadline a Run stream ends:
// the plugin ends the driver's context at the deadline itself.
const deadlineGrace = 100 * time.Millisecond

// runContainer starts task over a Run stream.
func (d *clientDriver) runContainer(ctx context.Context, req *driverv1.RunContainerRequest) (*clientContainer, error) {
	req.DeadlineUnixNano = deadlineOf(ctx)
	sctx, end := context.WithCancel(context.WithoutCancel(ctx))
	var started atomic.Bool
	stop := context.AfterFunc(ctx, func() {
		if started.Load() && errors.Is(ctx.Err(), context.DeadlineExceeded) {
			// The plugin's own timer ends the driver's context, with
			// context.DeadlineExceeded as in process; end the stream after.
			time.AfterFunc(deadlineGrace, end)
			return
		}
		end()
	})
	cancel := func() { stop(); end() }
	var t runConn
	var err error
	if d.client.bulk != "" {
		t, err = d.client.dialRun(sctx, req)
	}
	if t == nil {
		// Without a bulk socket, or when it cannot be reached: gRPC.
		t, err = d.client.grpcRun(sctx, req)
	}
	if err != nil {
		cancel()
		if ctx.Err() != nil {
			return nil, fmt.Errorf("plugin %s: RunContainer: %w", d.client.name, ctx.Err())
		}
		return nil, d.wrap("RunContainer", err)
	}
	var ev runEvent
	if err := t.RecvMsg(&ev); err != nil {
		cancel()
		if ctx.Err() != nil {
			return nil, fmt.Errorf("plugin %s: RunContainer: %w", d.client.name, ctx.Err())
		}
		return nil, d.wrap("RunContainer", transportError(err))
	}
	if failed := ev.msg.GetFailed(); failed != nil {
		cancel()
		if err := statusError(failed.GetStatus()); err != nil {
			return nil, d.wrap("RunContainer", err)
		}
		return nil, d.client.invalidReply("RunContainer", "the run stream reported a failure with status OK")
	}
	started.Store(true)
	if ev.output {
		ev.free()
		cancel()
		return nil, d.client.invalidReply("RunContainer", "the run stream began with output, not started")
	}
	resp := ev.msg.GetStarted()
	if resp == nil {
		cancel()
		return nil, d.client.invalidReply("RunContainer", "the run stream began with %T, not started", ev.msg.GetKind())
	}
	if err := d.client.checkContainer("RunContainer", resp); err != nil {
		cancel()
		return nil, err
	}
	r := &runClient{stream: t, cancel: cancel, driver: d}
	if !d.track(r) {
		cancel()
		return nil, fmt.Errorf("plugin %s: RunContainer: %w", d.client.name, orchestra.ErrClosed)
	}
	c := d.newContainer(resp)
	c.run = r
	return c, nil
}

// runConn is the host's end of a Run stream: the gRPC stream or a bulk
// connection (bulkRunClient).
type runConn interface {
	Send(*driverv1.RunRequest) error
	RecvMsg(any) error
}

// grpcRun opens a Run stream on gRPC and sends its start.
func (c *Client) grpcRun(ctx context.Context, req *driverv1.RunContainerRequest) (runConn, error) {
	stream, err := c.rpc.Run(ctx, logCallOption)
	if err != nil {
		return nil, err
	}
	if err := stream.Send(&driverv1.RunRequest{Kind: &driverv1.RunRequest_Start{Start: req}}); err != nil {
		// The real error comes with the stream's status.
		_, err = stream.Recv()
		return nil, err
	}
	return stream, nil
}

// dialRun opens a Run stream on the bulk socket; closing the connection,
// which happens when ctx ends, ends it.
func (c *Client) dialRun(ctx context.Context, req *driverv1.RunContainerRequest) (runConn, error) {
	conn, _, err := c.dialBulk(ctx, &driverv1.BulkRequest{Kind: &driverv1.BulkRequest_Run{Run: req}})
	if err != nil {
		return nil, err
	}
	return &bulkRunClient{conn: conn, r: bufio.NewReaderSize(conn, 32<<10)}, nil
}

// bulkRunClient is the host's end of a Run stream on a bulk connection.
type bulkRunClient struct {
	conn net.Conn
	r    *bufio.Reader
}

func (b *bulkRunClient) Send(req *driverv1.RunRequest) error {
	data, err := proto.Marshal(req)
	if err != nil {
		return fmt.Errorf("run request: %w", err)
	}
	return writeFrame(b.conn, data)
}

func (b *bulkRunClient) RecvMsg(m any) error {
	ev, ok := m.(*runEvent)
	if !ok {
		return fmt.Errorf("run stream: cannot receive %T", m)
	}
	size, err := readFrameSize(b.r, maxRunFrame)
	if err != nil {
		return err
	}
	pool := mem.DefaultBufferPool()
	buf := pool.Get(size)
	if _, err := io.ReadFull(b.r, *buf); err != nil {
		pool.Put(buf)
		return err
	}
	return ev.decode(mem.NewBuffer(buf, pool))
}

// transportError names a connection that ended without an answer.
func transportError(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("the plugin hung up before it answered")
	}
	return err
}

// runClient is one open Run stream.
type runClient struct {
	stream  runConn
	cancel  context.CancelFunc
	driver  *clientDriver
	endOnce sync.Once

	// use is held by the call that uses the stream (a follow, a cleanup);
	// another call at the same time takes the unary path.
	use    sync.Mutex
	dead   bool // the stream ended: every call takes the unary path
	sendMu sync.Mutex
}

func (r *runClient) send(req *driverv1.RunRequest) error {
	r.sendMu.Lock()
	defer r.sendMu.Unlock()
	return r.stream.Send(req)
}

// end ends the stream, which ends the driver's context in the plugin.
func (r *runClient) end() {
	r.endOnce.Do(func() {
		r.cancel()
		r.driver.untrack(r)
	})
}

// acquire takes the stream for one call, or reports that it cannot.
func (r *runClient) acquire() bool {
	if r == nil || !r.use.TryLock() {
		return false
	}
	if r.dead {
		r.use.Unlock()
		return false
	}
	return true
}

func deadlineOf(ctx context.Context) int64 {
	if dl, ok := ctx.Deadline(); ok {
		return dl.UnixNano()
	}
	return 0
}

// follow runs FollowLogs over the stream. When the stream ends under it (the
// context RunContainer got ended, but ctx did not), the follow goes on over
// the Logs call, skipping what was written already.
func (c *clientContainer) followRun(ctx context.Context, stdout, stderr io.Writer) error {
	r := c.run
	defer r.use.Unlock()
	const op = "FollowLogs"
	if err := r.send(&driverv1.RunRequest{Kind: &driverv1.RunRequest_Follow{Follow: &driverv1.FollowRequest{DeadlineUnixNano: deadlineOf(ctx)}}}); err != nil {
		r.dead = true
		return c.resumeFollow(ctx, stdout, stderr, 0, 0)
	}
	cancelled := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(cancelled)
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			// The follow in the plugin has the same deadline and ends by
			// itself, with context.DeadlineExceeded as in process.
			return
		}
		_ = r.send(&driverv1.RunRequest{Kind: &driverv1.RunRequest_CancelFollow{CancelFollow: &driverv1.CancelFollow{}}})
	})
	defer func() {
		if !stop() {
			// Wait for the cancel to go out, so that it cannot reach a
			// later follow.
			<-cancelled
		}
	}()
	var nout, nerr int64
	for {
		var ev runEvent
		if err := r.stream.RecvMsg(&ev); err != nil {
			r.dead = true
			if ctx.Err() != nil {
				return fmt.Errorf("plugin %s: %s: %w", c.driver.client.name, op, ctx.Err())
			}
			return c.resumeFollow(ctx, stdout, stderr, nout, nerr)
		}
		if ev.output {
			if err := c.driver.client.checkStream(op, ev.chunk.stream); err != nil {
				ev.free()
				r.dead = true
				return err
			}
			w, n := stdout, &nout
			if ev.chunk.stream == driverv1.LogChunk_STREAM_STDERR {
				w, n = stderr, &nerr
			}
			k, err := w.Write(ev.chunk.data)
			*n += int64(k)
			ev.free()
			if err != nil {
				return fmt.Errorf("plugin %s: %s: write output: %w", c.driver.client.name, op, err)
			}
			continue
		}
		end := ev.msg.GetFollowEnd()
		if end == nil {
			r.dead = true
			return fmt.Errorf("plugin %s: %s: unexpected %T on the run stream", c.driver.client.name, op, ev.msg.GetKind())
		}
		if err := statusError(end.GetStatus()); err != nil {
			return c.driver.wrap(op, err)
		}
		if end.GetDone() {
			if err := c.driver.client.checkExitCode(op, int64(end.GetExitCode())); err != nil {
				return err
			}
			c.cacheExit(int(end.GetExitCode()))
		}
		return nil
	}
}

// resumeFollow follows over the Logs call, dropping the first nout bytes of
// stdout and nerr of stderr, which the caller has already.
func (c *clientContainer) resumeFollow(ctx context.Context, stdout, stderr io.Writer, nout, nerr int64) error {
	return c.logs(ctx, true, &skipWriter{w: stdout, skip: nout}, &skipWriter{w: stderr, skip: nerr})
}

// skipWriter drops the first skip bytes written to it.
type skipWriter struct {
	w    io.Writer
	skip int64
}

func (s *skipWriter) Write(p []byte) (int, error) {
	n := len(p)
	if s.skip > 0 {
		k := min(int64(len(p)), s.skip)
		s.skip -= k
		p = p[k:]
	}
	if len(p) == 0 {
		return n, nil
	}
	if _, err := s.w.Write(p); err != nil {
		return 0, err
	}
	return n, nil
}

// cleanupRun cleans the container up over the stream, which then ends.
func (c *clientContainer) cleanupRun(ctx context.Context) error {
	r := c.run
	defer r.use.Unlock()
	defer r.end()
	r.dead = true
	stop := context.AfterFunc(ctx, r.end)
	defer stop()
	if err := r.send(&driverv1.RunRequest{Kind: &driverv1.RunRequest_Cleanup{Cleanup: &driverv1.CleanupRequest{DeadlineUnixNano: deadlineOf(ctx)}}}); err != nil {
		return c.cleanupUnary(ctx)
	}
	for {
		var ev runEvent
		if err := r.stream.RecvMsg(&ev); err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("plugin %s: Cleanup: %w", c.driver.client.name, ctx.Err())
			}
			return c.cleanupUnary(ctx)
		}
		if ev.output {
			ev.free()
			continue
		}
		if cleaned := ev.msg.GetCleaned(); cleaned != nil {
			return c.driver.wrap("Cleanup", statusError(cleaned.GetStatus()))
		}
	}
}

// statusError decodes a marshalled google.rpc.Status; nil for code 0.
func statusError(b []byte) error {
	st := &status.Status{}
	if err := proto.Unmarshal(b, st); err != nil {
		return fmt.Errorf("bad status from the plugin: %w", err)
	}
	return grpcstatus.ErrorProto(st)
}

// runEvent is a RunEvent as logCodec decodes it: output in place (its data
// aliases a pooled buffer; release it with free), anything else as the
// generated message.
type runEvent struct {
	output bool
	chunk  logChunk
	msg    *driverv1.RunEvent
}

func (e *runEvent) free() { e.chunk.free() }

// decode parses a RunEvent from buf, which it keeps when the event is
// output.
func (e *runEvent) decode(buf mem.Buffer) error {
	b := buf.ReadOnlyData()
	num, typ, n := protowire.ConsumeTag(b)
	if n > 0 && num == 2 && typ == protowire.BytesType {
		v, m := protowire.ConsumeBytes(b[n:])
		if m < 0 {
			return fmt.Errorf("run event output: %w", protowire.ParseError(m))
		}
		if n+m == len(b) {
			if err := e.chunk.decode(v); err != nil {
				return err
			}
			e.output, e.chunk.buf = true, buf
			return nil
		}
	}
	if err := checkRawExitCode(b, 3, 3); err != nil {
		buf.Free()
		return fmt.Errorf("run event follow_end: %w", err)
	}
	e.msg = &driverv1.RunEvent{}
	err := proto.Unmarshal(b, e.msg)
	buf.Free()
	if err != nil {
		return fmt.Errorf("run event: %w", err)
	}
	if out := e.msg.GetOutput(); out != nil {
		// Output with other fields beside: take it as decoded.
		e.output, e.chunk = true, logChunk{stream: out.GetStream(), data: out.GetData()}
	}
	return nil
}

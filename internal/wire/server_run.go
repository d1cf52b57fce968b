package wire

import (
	"context"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/jtarchie/pocketci/pluginsdk/proto/driverv1"
)

// Run serves the Run stream (protocol 1.3): the driver's RunContainer gets
// a context that ends when the stream does, which the host ends when its
// caller's context ends, and that carries the caller's deadline. The stream
// stays open until the host ends it, so neither ends when RunContainer
// returns. The bulk socket serves the same stream (serveRunBulk). Its twin is
// client_run.go.
func (s *server) Run(stream driverv1.Driver_RunServer) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	start := first.GetStart()
	if start == nil {
		return status.Error(codes.InvalidArgument, "run stream: the first request must be start")
	}
	return s.run(stream.Context(), stream, start)
}

// runTransport is what a Run stream travels on: the gRPC stream or a bulk
// connection.
type runTransport interface {
	Recv() (*driverv1.RunRequest, error)
	SendMsg(any) error
}

// run serves one Run stream whose start is start. parent ends when the
// transport does.
func (s *server) run(parent context.Context, t runTransport, start *driverv1.RunContainerRequest) error {
	// The deadline comes in the request, not as the stream's: the host ends
	// the stream when its caller's context is cancelled, and leaves a
	// deadline to the timer here, so that the driver sees
	// context.DeadlineExceeded as it would in process.
	ctx, cancel := withDeadline(parent, start.GetDeadlineUnixNano())
	defer cancel()
	r := &runServer{server: s, t: t, ctx: ctx, cancel: cancel, started: make(chan struct{}), finished: make(chan error, 1)}
	// The reader runs beside RunContainer, so that the host hanging up
	// cancels the driver's context at once, then serves the requests.
	go r.read()
	var resp *driverv1.RunContainerResponse
	err := s.safely("/pocketci.driver.v1.Driver/Run", func() (err error) {
		resp, err = s.RunContainer(ctx, start)
		return err
	})
	if err != nil {
		return err
	}
	r.ref = &driverv1.ContainerRef{Driver: start.GetDriver(), Container: resp.GetContainer().GetContainer(), TaskId: resp.GetContainer().GetTaskId()}
	if err := r.send(&driverv1.RunEvent{Kind: &driverv1.RunEvent_Started{Started: resp}}); err != nil {
		return err
	}
	close(r.started)
	return <-r.finished
}

// read serves the host's requests once the container started, until the
// host ends the stream or asks for cleanup.
func (r *runServer) read() {
	defer r.stopFollow()
	for {
		req, err := r.t.Recv()
		if err != nil {
			// The host ended the stream (its caller's context ended, or it
			// is done with the container): the driver's context ends too.
			r.cancel()
			r.finished <- nil
			return
		}
		select {
		case <-r.started:
		case <-r.ctx.Done():
			r.finished <- nil
			return
		}
		switch k := req.GetKind().(type) {
		case *driverv1.RunRequest_Follow:
			r.follow(k.Follow)
		case *driverv1.RunRequest_CancelFollow:
			if r.cancelFollow != nil {
				r.cancelFollow()
			}
		case *driverv1.RunRequest_Cleanup:
			r.stopFollow()
			cctx, ccancel := withDeadline(r.ctx, k.Cleanup.GetDeadlineUnixNano())
			err := r.server.safely("Run Cleanup", func() error { _, err := r.server.Cleanup(cctx, r.ref); return err })
			ccancel()
			r.finished <- r.send(&driverv1.RunEvent{Kind: &driverv1.RunEvent_Cleaned{Cleaned: &driverv1.Outcome{Status: statusBytes(err)}}})
			return
		default:
			r.finished <- status.Errorf(codes.InvalidArgument, "run stream: unexpected request %T", k)
			return
		}
	}
}

// safely runs fn, a panic in it made an error: the interceptors recover
// panics in a handler's own goroutine only.
func (s *server) safely(method string, fn func() error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = panicError(s.logger, method, p)
		}
	}()
	return fn()
}

// runServer is the plugin's side of one Run stream after its start.
type runServer struct {
	server *server
	t      runTransport
	ctx    context.Context
	cancel context.CancelFunc
	ref    *driverv1.ContainerRef
	// started is closed once the started event is out; finished gets the
	// stream's end from read.
	started  chan struct{}
	finished chan error

	sendMu sync.Mutex

	// The follow in progress, if any; only read touches them.
	cancelFollow context.CancelFunc
	followDone   chan struct{}
}

func (r *runServer) send(ev any) error {
	r.sendMu.Lock()
	defer r.sendMu.Unlock()
	return r.t.SendMsg(ev)
}

// follow starts FollowLogs in the background: its output goes out as
// output events, then a follow_end with the final status.
func (r *runServer) follow(req *driverv1.FollowRequest) {
	r.stopFollow()
	ctx, cancel := withDeadline(r.ctx, req.GetDeadlineUnixNano())
	done := make(chan struct{})
	r.cancelFollow, r.followDone = cancel, done
	go func() {
		defer close(done)
		defer cancel()
		out := &chunkSender{stream: lockedSender{r}, follow: true, run: true}
		c, err := r.followLogs(ctx, out)
		if ferr := out.flush(); err == nil {
			err = ferr
		}
		end := &driverv1.FollowEnd{Status: statusBytes(err)}
		if err == nil {
			if code, ok := c.finalStatus(ctx); ok {
				end.Done, end.ExitCode = true, int32(code)
			}
		}
		_ = r.send(&driverv1.RunEvent{Kind: &driverv1.RunEvent_FollowEnd{FollowEnd: end}})
	}()
}

// followLogs runs the driver's FollowLogs, a panic in it made an error.
func (r *runServer) followLogs(ctx context.Context, out *chunkSender) (c *served, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = panicError(r.server.logger, "/pocketci.driver.v1.Driver/Run FollowLogs", p)
		}
	}()
	return r.server.logs(ctx, &driverv1.LogsRequest{Container: r.ref, Follow: true},
		out.writer(driverv1.LogChunk_STREAM_STDOUT), out.writer(driverv1.LogChunk_STREAM_STDERR))
}

// stopFollow cancels the follow in progress and waits for it.
func (r *runServer) stopFollow() {
	if r.cancelFollow == nil {
		return
	}
	r.cancelFollow()
	<-r.followDone
	r.cancelFollow, r.followDone = nil, nil
}

// lockedSender sends on the Run stream under its send lock.
type lockedSender struct{ r *runServer }

func (l lockedSender) SendMsg(m any) error { return l.r.send(m) }

// withDeadline bounds ctx by a deadline sent as Unix nanoseconds (0: none).
func withDeadline(ctx context.Context, unixNano int64) (context.Context, context.CancelFunc) {
	if unixNano == 0 {
		return context.WithCancel(ctx)
	}
	return context.WithDeadline(ctx, time.Unix(0, unixNano))
}

// statusBytes is err as a marshalled google.rpc.Status, code 0 for nil.
func statusBytes(err error) []byte {
	b, merr := proto.Marshal(status.Convert(toStatus(err)).Proto())
	if merr != nil {
		return nil
	}
	return b
}

package wire

import (
	"context"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/jtarchie/pocketci/internal/bulk"

	"github.com/jtarchie/pocketci/proto/driverv1"
)

// serveRun serves a Run stream on a bulk connection (its twin is
// client_run.go): the driver's RunContainer gets a context that ends when
// the host closes the connection (its caller's context ended, or the
// container was cleaned up) and that carries the caller's deadline, so
// neither ends when RunContainer returns.
func (s *Server) serveRun(conn net.Conn, start *driverv1.RunContainerRequest) {
	// The deadline comes in the request: the host leaves it to the timer
	// here, so that the driver sees context.DeadlineExceeded as in process.
	ctx, cancel := withDeadline(context.Background(), start.GetDeadlineUnixNano())
	defer cancel()
	hungUp := make(chan struct{})
	go func() {
		defer close(hungUp)
		_, _ = io.Copy(io.Discard, conn) // the host sends nothing more
		cancel()
	}()
	var resp *driverv1.RunContainerResponse
	err := s.safely("Run", func() (err error) {
		resp, err = s.runContainer(ctx, start)
		return err
	})
	ev := &driverv1.RunEvent{Kind: &driverv1.RunEvent_Started{Started: resp}}
	if err != nil {
		ev.Kind = &driverv1.RunEvent_Failed{Failed: &driverv1.Outcome{Status: bulk.StatusBytes(toStatus(err))}}
	}
	if werr := bulk.WriteMessage(conn, ev); werr != nil || err != nil {
		return
	}
	<-hungUp
}

// runContainer starts the task of req under ctx, with its stdin when the
// host sends one.
func (s *Server) runContainer(ctx context.Context, req *driverv1.RunContainerRequest) (*driverv1.RunContainerResponse, error) {
	inst, err := s.instance(req.GetDriver())
	if err != nil {
		return nil, err
	}
	task := taskFromProto(req.GetTask())
	var pipe *stdinPipe
	if token := req.GetStdinToken(); token != "" {
		pipe = s.stdins.claim(token)
		task.Stdin = pipe.r
	}
	container, err := inst.driver.RunContainer(ctx, task)
	if err == nil && container == nil {
		err = s.errNoContainer(fmt.Sprintf("task %q", task.ID))
	}
	if err != nil {
		if pipe != nil {
			pipe.close(err)
		}
		return nil, toStatus(err)
	}
	return inst.serve(container, task.ID, pipe).response(), nil
}

// withDeadline bounds ctx by a deadline sent as Unix nanoseconds (0: none).
func withDeadline(ctx context.Context, unixNano int64) (context.Context, context.CancelFunc) {
	if unixNano == 0 {
		return context.WithCancel(ctx)
	}
	return context.WithDeadline(ctx, time.Unix(0, unixNano))
}

package wire

import (
	"context"
	"errors"
	"io"
	"net"
	"time"

	"github.com/jtarchie/pocketci/internal/bulk"
	"github.com/jtarchie/pocketci/proto/driverv1"
)

// The host's half of the Run stream (its twin is server_run.go): a bulk
// connection that answers started or failed, then lives until the caller's
// context ends, the container is cleaned up or the driver closes, and whose
// end ends the driver's context in the plugin.

// deadlineGrace is how long after its caller's deadline a Run stream ends:
// the plugin ends the driver's context at the deadline itself, so that the
// driver sees context.DeadlineExceeded as in process.
const deadlineGrace = 100 * time.Millisecond

// run starts req's task over a Run stream.
func (d *clientDriver) run(ctx context.Context, req *driverv1.RunContainerRequest) (*clientContainer, error) {
	conn, stopDial, err := d.client.dialBulk(context.WithoutCancel(ctx), &driverv1.BulkRequest{Kind: &driverv1.BulkRequest_Run{Run: req}})
	if err != nil {
		return nil, d.client.fail("RunContainer", err)
	}
	stopDial()
	resp, err := d.started(ctx, conn)
	if err != nil {
		conn.Close()
		return nil, err
	}
	run, err := d.track(conn)
	if err != nil {
		return nil, err
	}
	c := d.newContainer(resp, req.GetTask().GetId())
	c.run = run
	c.stopLife = context.AfterFunc(ctx, func() {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			time.AfterFunc(deadlineGrace, run.end)
			return
		}
		run.end()
	})
	return c, nil
}

// started reads and checks the Run stream's first event. Until it comes,
// the caller's ctx ending ends the stream at once; after, a deadline leaves
// the plugin its own timer first.
func (d *clientDriver) started(ctx context.Context, conn net.Conn) (*driverv1.RunContainerResponse, error) {
	const op = "RunContainer"
	stopWatch := context.AfterFunc(ctx, func() { conn.Close() })
	ev := &driverv1.RunEvent{}
	err := bulk.ReadMessage(conn, ev, maxBulkRequest)
	switch {
	case !stopWatch() || ctx.Err() != nil:
		return nil, d.client.fail(op, ctx.Err())
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		return nil, d.client.fail(op, errors.New("the plugin hung up before it answered"))
	case err != nil:
		return nil, d.client.fail(op, err)
	}
	if failed := ev.GetFailed(); failed != nil {
		outcome, err := bulk.StatusError(failed.GetStatus())
		switch {
		case err != nil:
			return nil, d.client.invalidReply(op, "%v", err)
		case outcome == nil:
			return nil, d.client.invalidReply(op, "the run stream reported a failure with status OK")
		}
		return nil, d.wrap(op, outcome)
	}
	resp := ev.GetStarted()
	if resp == nil {
		return nil, d.client.invalidReply(op, "the run stream began with %T, not started", ev.GetKind())
	}
	return resp, d.client.checkContainer(op, resp)
}

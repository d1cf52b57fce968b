package wire

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/jtarchie/pocketci/proto/driverv1"
)

// The host's half of the Run stream (its twin is server_run.go).
// RunContainer opens a bulk connection with the caller's context, so the
// driver in the plugin gets a context that ends when the caller's does and
// carries its deadline. The stream answers started, or failed; then it only
// lives, until the caller's context ends, the container is cleaned up or the
// driver closes.

// deadlineGrace is how long after its caller's deadline a Run stream ends:
// the plugin ends the driver's context at the deadline itself, so that the
// driver sees context.DeadlineExceeded as in process.
const deadlineGrace = 100 * time.Millisecond

// run starts req's task over a Run stream.
func (d *clientDriver) run(ctx context.Context, req *driverv1.RunContainerRequest) (*clientContainer, error) {
	op := "RunContainer"
	conn, stopDial, err := d.client.dialBulk(context.WithoutCancel(ctx), &driverv1.BulkRequest{Kind: &driverv1.BulkRequest_Run{Run: req}})
	if err != nil {
		return nil, fmt.Errorf("plugin %s: %s: %w", d.client.name, op, err)
	}
	stopDial()
	// Until the plugin answers, the caller's ctx ending ends the stream at
	// once; after, a deadline leaves the plugin its own timer first.
	stopWatch := context.AfterFunc(ctx, func() { conn.Close() })
	ev := &driverv1.RunEvent{}
	err = readMessage(conn, ev, maxBulkRequest)
	if !stopWatch() || ctx.Err() != nil {
		conn.Close()
		return nil, fmt.Errorf("plugin %s: %s: %w", d.client.name, op, ctx.Err())
	}
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("plugin %s: %s: %w", d.client.name, op, hungUp(err))
	}
	resp, err := d.started(ev)
	if err != nil {
		conn.Close()
		return nil, err
	}
	run, err := d.track(func() { conn.Close() })
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

// started checks the Run stream's first event.
func (d *clientDriver) started(ev *driverv1.RunEvent) (*driverv1.RunContainerResponse, error) {
	const op = "RunContainer"
	if failed := ev.GetFailed(); failed != nil {
		outcome, err := statusError(failed.GetStatus())
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
	if err := d.client.checkContainer(op, resp); err != nil {
		return nil, err
	}
	return resp, nil
}

// hungUp names a connection that ended without an answer.
func hungUp(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return errors.New("the plugin hung up before it answered")
	}
	return err
}

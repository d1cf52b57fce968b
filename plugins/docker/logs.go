package docker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"

	"github.com/jtarchie/pocketci/orchestra"
)

// followPoll is how often a followed Logs asks whether the container has
// exited when the engine's follow stream ended before the engine says so.
const followPoll = 5 * time.Millisecond

// Logs writes everything the container wrote, from the start,
// demultiplexed into stdout and stderr (see demux for the newlines of long
// lines a 20.10 engine drops). When the command could not start, the
// runtime's message is written to stderr.
//
// Without follow it writes what there is now, the same bytes on every
// call. With follow it writes the output as it is produced and returns
// once the container has exited and everything was written, or when ctx
// ends.
//
// The engine's follow stream can end without the last line when that line
// has no newline (moby/moby#43860). So a followed Logs counts the bytes it
// passed on for each stream and, once the stream ended and the container
// has exited, reads the complete log and writes, per stream, whatever lies
// beyond those counts: every byte once, in order, streamed (bounded
// memory).
func (c *Container) Logs(ctx context.Context, stdout, stderr io.Writer, follow bool) error {
	stdout, stderr = orDiscard(stdout), orDiscard(stderr)
	st, err := c.state(ctx)
	if err != nil {
		return err
	}
	if !follow || st.IsDone() {
		if err := c.copyLogs(ctx, false, st.IsDone(), stdout, stderr); err != nil {
			return err
		}
		return c.writeStartError(stderr)
	}
	out, errw := &countingWriter{w: stdout}, &countingWriter{w: stderr}
	if err := c.copyLogs(ctx, true, false, out, errw); err != nil {
		return err
	}
	if err := c.waitExited(ctx); err != nil {
		return err
	}
	rest := []io.Writer{&skipWriter{w: stdout, skip: out.n}, &skipWriter{w: stderr, skip: errw.n}}
	if err := c.copyLogs(ctx, false, true, rest[0], rest[1]); err != nil {
		return err
	}
	return c.writeStartError(stderr)
}

// copyLogs streams the container's log, from the start, into stdout and
// stderr; with follow, until the engine ends the stream. final says the
// task is done and the read complete (not a follow stream, which may stop
// short): how each stream ends is then known.
func (c *Container) copyLogs(ctx context.Context, follow, final bool, stdout, stderr io.Writer) error {
	rc, err := c.driver.client.ContainerLogs(ctx, c.id, container.LogsOptions{
		ShowStdout: true,
		ShowStderr: true,
		Follow:     follow,
	})
	if err != nil {
		if cerrdefs.IsNotFound(err) {
			return fmt.Errorf("docker: logs of task %q (container %s): %w", c.taskID, c.name, orchestra.ErrContainerNotFound)
		}
		return fmt.Errorf("docker: logs of task %q (container %s): %w", c.taskID, c.name, err)
	}
	defer rc.Close()
	dm := newDemux(stdout, stderr, c.driver.repairSplitLines())
	err = dm.copy(rc, final)
	if follow && errors.Is(err, io.ErrUnexpectedEOF) {
		// A follow stream cut inside a frame: the completion read after
		// exit writes what it lacked.
		err = nil
	}
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("docker: logs of task %q: %w", c.taskID, ctx.Err())
		}
		return fmt.Errorf("docker: logs of task %q (container %s): %w", c.taskID, c.name, err)
	}
	if follow && ctx.Err() != nil {
		return fmt.Errorf("docker: follow logs of task %q: %w", c.taskID, ctx.Err())
	}
	return nil
}

// waitExited polls the container's state until it is done: the engine's
// follow stream ends a moment (here 20-50 ms) before the engine records
// the exit. Polling the state is quicker than ContainerWait here, which
// answered 60-140 ms after the follow stream ended.
func (c *Container) waitExited(ctx context.Context) error {
	for {
		st, err := c.state(ctx)
		if err != nil {
			return err
		}
		if st.IsDone() {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("docker: follow logs of task %q: %w", c.taskID, ctx.Err())
		case <-time.After(followPoll):
		}
	}
}

// writeStartError writes the runtime's message to stderr when the command
// could not start.
func (c *Container) writeStartError(stderr io.Writer) error {
	c.mu.Lock()
	msg := c.startError
	c.mu.Unlock()
	if msg == "" {
		return nil
	}
	if _, err := io.WriteString(stderr, msg+"\n"); err != nil {
		return fmt.Errorf("docker: logs of task %q: %w", c.taskID, err)
	}
	return nil
}

func orDiscard(w io.Writer) io.Writer {
	if w == nil {
		return io.Discard
	}
	return w
}

// countingWriter counts the bytes its writer accepted.
type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// skipWriter drops the first skip bytes written to it and passes the rest
// on.
type skipWriter struct {
	w    io.Writer
	skip int64
}

func (s *skipWriter) Write(p []byte) (int, error) {
	total := len(p)
	if s.skip > 0 {
		drop := min(s.skip, int64(len(p)))
		s.skip -= drop
		p = p[drop:]
	}
	if len(p) == 0 {
		return total, nil
	}
	n, err := s.w.Write(p)
	if err != nil {
		return total - len(p) + n, err
	}
	return total, nil
}

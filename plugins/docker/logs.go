package docker

import (
	"context"
	"fmt"
	"io"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/pkg/stdcopy"

	"github.com/jtarchie/pocketci/orchestra"
)

// followPoll is how often FollowLogs asks whether the container has
// exited when the engine's follow stream ended before the engine says so.
const followPoll = 5 * time.Millisecond

// Logs writes everything the container wrote, from the start, demultiplexed
// into stdout and stderr. When the command could not start, the runtime's
// message is written to stderr.
func (c *Container) Logs(ctx context.Context, stdout, stderr io.Writer) error {
	stdout, stderr = orDiscard(stdout), orDiscard(stderr)
	if _, err := c.state(ctx); err != nil {
		return err
	}
	if err := c.copyLogs(ctx, false, stdout, stderr); err != nil {
		return err
	}
	return c.writeStartError(stderr)
}

// FollowLogs writes the container's output from the start as it is
// produced and returns once the container has exited and everything was
// written, or when ctx ends.
//
// The engine's follow stream can end without the last line when that line
// has no newline (moby/moby#43860). So FollowLogs counts the bytes it
// passed on for each stream and, once the stream ended and the container
// has exited, reads the complete log and writes, per stream, whatever lies
// beyond those counts: every byte once, in order, streamed (bounded
// memory).
func (c *Container) FollowLogs(ctx context.Context, stdout, stderr io.Writer) error {
	stdout, stderr = orDiscard(stdout), orDiscard(stderr)
	st, err := c.state(ctx)
	if err != nil {
		return err
	}
	if st.IsDone() {
		if err := c.copyLogs(ctx, false, stdout, stderr); err != nil {
			return err
		}
		return c.writeStartError(stderr)
	}
	out, errw := &countingWriter{w: stdout}, &countingWriter{w: stderr}
	if err := c.copyLogs(ctx, true, out, errw); err != nil {
		return err
	}
	if err := c.waitExited(ctx); err != nil {
		return err
	}
	rest := []io.Writer{&skipWriter{w: stdout, skip: out.n}, &skipWriter{w: stderr, skip: errw.n}}
	if err := c.copyLogs(ctx, false, rest[0], rest[1]); err != nil {
		return err
	}
	return c.writeStartError(stderr)
}

// copyLogs streams the container's log, from the start, into stdout and
// stderr; with follow, until the engine ends the stream.
func (c *Container) copyLogs(ctx context.Context, follow bool, stdout, stderr io.Writer) error {
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
	if _, err := stdcopy.StdCopy(stdout, stderr, rc); err != nil {
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

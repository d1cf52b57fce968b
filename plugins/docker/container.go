package docker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/pkg/stdcopy"

	"github.com/jtarchie/pocketci/orchestra"
)

// createdGrace is how long a container may stay "created" (never started,
// with no start error) before Status gives up on it and reports it done with
// exit code 125. RunContainer starts what it creates within milliseconds,
// so this only happens when the driver instance that created it died
// between create and start.
const createdGrace = time.Minute

// exitNeverStarted is the exit code of a container that never started and
// never will (Docker's own code for "the container could not be run").
const exitNeverStarted = 125

// exitKilled is the exit code reported for a container removed by Cleanup
// before it finished: force removal kills it with SIGKILL (128+9).
const exitKilled = 137

// Container is a task running (or done) in a Docker container. It implements
// orchestra.Container and orchestra.LogFollower.
type Container struct {
	driver *Driver
	id     string // engine ID
	name   string // Docker name
	taskID string

	stdin     *types.HijackedResponse // attach connection feeding stdin, nil without stdin
	stdinOnce sync.Once

	mu         sync.Mutex
	final      *Status // cached once done
	startError string  // the runtime's message when the command could not start
	removed    bool    // Cleanup removed it
}

var _ orchestra.LogFollower = (*Container)(nil)

// Status is a container's state: whether it is done and its exit code.
type Status struct {
	done     bool
	exitCode int
}

// IsDone reports whether the task has finished.
func (s *Status) IsDone() bool { return s.done }

// ExitCode is the task's exit code (128+N when killed by signal N, 137 on an
// OOM kill).
func (s *Status) ExitCode() int { return s.exitCode }

// remember records c in its driver under its task ID.
func (c *Container) remember() {
	c.driver.mu.Lock()
	defer c.driver.mu.Unlock()
	c.driver.containers[c.taskID] = c
}

func (c *Container) isRemoved() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.removed
}

// copyStdin feeds r into the container's stdin through the attach
// connection, then half-closes it so the command sees EOF, and keeps the
// connection until the engine ends it (when the container exits), so that
// nothing written is lost. It runs in its own goroutine, independent of
// RunContainer's context.
func (c *Container) copyStdin(r io.Reader) {
	h := c.stdin
	defer c.closeStdin()
	n, err := io.Copy(h.Conn, r)
	if err != nil {
		c.driver.logger.Warn("copying stdin into the container stopped early", "task", c.taskID, "container", c.name, "bytes", n, "err", err)
	} else {
		c.driver.logger.Debug("stdin copied", "task", c.taskID, "container", c.name, "bytes", n)
	}
	if err := h.CloseWrite(); err != nil {
		c.driver.logger.Debug("half-closing stdin", "task", c.taskID, "err", err)
	}
	_, _ = io.Copy(io.Discard, h.Reader)
}

// closeStdin closes the attach connection, if any. Safe to call many times.
func (c *Container) closeStdin() {
	if c.stdin == nil {
		return
	}
	c.stdinOnce.Do(c.stdin.Close)
}

// Status inspects the container. Once it is done the result is cached and
// returned from then on without asking the engine.
func (c *Container) Status(ctx context.Context) (orchestra.ContainerStatus, error) {
	c.mu.Lock()
	if c.final != nil {
		s := c.final
		c.mu.Unlock()
		return s, nil
	}
	c.mu.Unlock()

	info, err := c.driver.client.ContainerInspect(ctx, c.id)
	if err != nil {
		if cerrdefs.IsNotFound(err) {
			return nil, fmt.Errorf("docker: status of task %q (container %s): %w", c.taskID, c.name, orchestra.ErrContainerNotFound)
		}
		return nil, fmt.Errorf("docker: status of task %q (container %s): %w", c.taskID, c.name, err)
	}
	if info.State == nil {
		return nil, fmt.Errorf("docker: status of task %q (container %s): engine reported no state", c.taskID, c.name)
	}
	created, _ := time.Parse(time.RFC3339Nano, info.Created)
	s, startErr := statusOf(info.State, created, time.Now())
	if s.done {
		c.mu.Lock()
		if c.final == nil {
			c.final = s
			c.startError = startErr
			if info.State.OOMKilled {
				c.driver.logger.Warn("task was OOM killed", "task", c.taskID, "container", c.name, "exit_code", s.exitCode)
			}
		}
		s = c.final
		c.mu.Unlock()
	}
	return s, nil
}

// statusOf maps the engine's container state onto a Status. Every state
// either is done or moves on: see README.md for the table.
func statusOf(st *container.State, created, now time.Time) (s *Status, startError string) {
	switch container.ContainerState(st.Status) {
	case container.StateRunning, container.StatePaused, container.StateRestarting:
		return &Status{}, ""
	case container.StateExited, container.StateDead:
		code := st.ExitCode
		if st.OOMKilled && code <= 0 {
			code = exitKilled
		}
		return &Status{done: true, exitCode: code}, ""
	case container.StateRemoving:
		if st.Running {
			return &Status{}, ""
		}
		return &Status{done: true, exitCode: st.ExitCode}, ""
	case container.StateCreated:
		if st.Error != "" || st.ExitCode != 0 {
			code := st.ExitCode
			if code == 0 {
				code = exitNeverStarted
			}
			return &Status{done: true, exitCode: code}, st.Error
		}
		if !created.IsZero() && now.Sub(created) > createdGrace {
			return &Status{done: true, exitCode: exitNeverStarted},
				fmt.Sprintf("container was created at %s and never started", created.Format(time.RFC3339))
		}
		return &Status{}, ""
	default:
		// An unknown state: trust the engine's Running flag.
		if st.Running {
			return &Status{}, ""
		}
		return &Status{done: true, exitCode: st.ExitCode}, ""
	}
}

// Logs writes everything the container wrote, from the start, demultiplexed
// into stdout and stderr. When the command could not start, the runtime's
// message is written to stderr.
func (c *Container) Logs(ctx context.Context, stdout, stderr io.Writer) error {
	return c.logs(ctx, stdout, stderr, false)
}

// FollowLogs writes the container's output from the start as it is produced
// and returns once the container has exited and everything was written, or
// when ctx ends.
func (c *Container) FollowLogs(ctx context.Context, stdout, stderr io.Writer) error {
	return c.logs(ctx, stdout, stderr, true)
}

func (c *Container) logs(ctx context.Context, stdout, stderr io.Writer, follow bool) error {
	if stdout == nil {
		stdout = io.Discard
	}
	if stderr == nil {
		stderr = io.Discard
	}
	st, err := c.Status(ctx)
	if err != nil {
		return err
	}
	rc, err := c.driver.client.ContainerLogs(ctx, c.id, container.LogsOptions{
		ShowStdout: true,
		ShowStderr: true,
		Follow:     follow && !st.IsDone(),
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
	if follow && !st.IsDone() {
		// The stream ended because the container exited: pick up the
		// status (and a start error, if any) for the message below.
		if _, err := c.Status(ctx); err != nil {
			return err
		}
	}
	c.mu.Lock()
	msg := c.startError
	c.mu.Unlock()
	if msg != "" {
		if _, err := io.WriteString(stderr, msg+"\n"); err != nil {
			return fmt.Errorf("docker: logs of task %q: %w", c.taskID, err)
		}
	}
	return nil
}

// Cleanup force-removes the container (killing it when still running). An
// absent container is not an error; calling it again does nothing. A task
// removed before it finished reports exit code 137 from then on.
func (c *Container) Cleanup(ctx context.Context) error {
	c.closeStdin()
	if c.isRemoved() {
		return nil
	}
	// Settle the final status first, so Status stays answerable afterwards.
	if _, err := c.Status(ctx); err != nil && !errors.Is(err, orchestra.ErrContainerNotFound) {
		c.driver.logger.Debug("status before cleanup", "task", c.taskID, "err", err)
	}
	err := c.driver.client.ContainerRemove(ctx, c.id, container.RemoveOptions{Force: true})
	if err != nil && !cerrdefs.IsNotFound(err) && !isRemovalInProgress(err) {
		return fmt.Errorf("docker: remove container %s of task %q: %w", c.name, c.taskID, err)
	}
	c.mu.Lock()
	c.removed = true
	if c.final == nil {
		c.final = &Status{done: true, exitCode: exitKilled}
	}
	c.mu.Unlock()
	c.driver.logger.Debug("container removed", "task", c.taskID, "container", c.name)
	return nil
}

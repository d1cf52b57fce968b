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
// orchestra.Container.
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
	stdinErr   error   // the caller's stdin reader failed: the task was stopped
	removed    bool    // Cleanup removed it
}

var _ orchestra.Container = (*Container)(nil)

// ID is the engine's container ID, which Driver.GetContainer accepts in any
// driver instance of the namespace.
func (c *Container) ID() string { return c.id }

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

// forget drops c from its driver: nothing is kept per task after Cleanup.
func (c *Container) forget() {
	c.driver.mu.Lock()
	defer c.driver.mu.Unlock()
	if c.driver.containers[c.taskID] == c {
		delete(c.driver.containers, c.taskID)
	}
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
//
// When r fails (an error other than EOF), the command must not see a clean
// end of its input: the container is killed before the connection closes,
// and Status reports the failure from then on.
func (c *Container) copyStdin(r io.Reader) {
	h := c.stdin
	defer c.closeStdin()
	src := &errorRecorder{r: r}
	n, err := io.Copy(h.Conn, src)
	if src.err != nil {
		c.failStdin(n, src.err)
		return
	}
	if err != nil {
		// The connection failed, not the caller: the engine ended it (the
		// command exited or the container went away).
		c.driver.logger.Warn("copying stdin into the container stopped early", "task", c.taskID, "container", c.name, "bytes", n, "err", err)
	} else {
		c.driver.logger.Debug("stdin copied", "task", c.taskID, "container", c.name, "bytes", n)
	}
	if err := h.CloseWrite(); err != nil {
		c.driver.logger.Debug("half-closing stdin", "task", c.taskID, "err", err)
	}
	_, _ = io.Copy(io.Discard, h.Reader)
}

// stdinStopTimeout bounds how long failStdin waits for the engine to kill
// the container.
const stdinStopTimeout = time.Minute

// failStdin records that the caller's stdin reader failed after n bytes and
// kills the container, waiting until it no longer runs, so that the
// command never reads a clean EOF on truncated input.
func (c *Container) failStdin(n int64, err error) {
	c.mu.Lock()
	c.stdinErr = fmt.Errorf("stdin failed after %d bytes, the task was stopped: %w", n, err)
	c.mu.Unlock()
	c.driver.logger.Warn("the task's stdin reader failed: killing the task", "task", c.taskID, "container", c.name, "bytes", n, "err", err)
	ctx, cancel := context.WithTimeout(context.Background(), stdinStopTimeout)
	defer cancel()
	if kerr := c.driver.client.ContainerKill(ctx, c.id, "KILL"); kerr != nil && !cerrdefs.IsNotFound(kerr) {
		c.driver.logger.Debug("kill after stdin failure", "task", c.taskID, "err", kerr)
	}
	for ctx.Err() == nil {
		info, ierr := c.driver.client.ContainerInspect(ctx, c.id)
		if ierr != nil || info.State == nil || !info.State.Running {
			return
		}
		select {
		case <-ctx.Done():
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// errorRecorder passes reads through and remembers the first error other
// than io.EOF, so that a failing reader can be told from a failing
// connection after io.Copy.
type errorRecorder struct {
	r   io.Reader
	err error
}

func (e *errorRecorder) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && !errors.Is(err, io.EOF) && e.err == nil {
		e.err = err
	}
	return n, err
}

// closeStdin closes the attach connection, if any. Safe to call many times.
func (c *Container) closeStdin() {
	if c.stdin == nil {
		return
	}
	c.stdinOnce.Do(c.stdin.Close)
}

// Status inspects the container. Once it is done the result is cached and
// returned from then on without asking the engine. When the caller's stdin
// reader failed, the task was stopped and Status returns an error naming
// stdin (wrapping the reader's error), from then on.
func (c *Container) Status(ctx context.Context) (orchestra.ContainerStatus, error) {
	c.mu.Lock()
	stdinErr := c.stdinErr
	c.mu.Unlock()
	if stdinErr != nil {
		return nil, fmt.Errorf("docker: task %q (container %s): %w", c.taskID, c.name, stdinErr)
	}
	st, err := c.state(ctx)
	if err != nil {
		return nil, err
	}
	return st, nil
}

// state is Status without the stdin check: the container's own state.
func (c *Container) state(ctx context.Context) (*Status, error) {
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

// Cleanup force-removes the container (killing it when still running). An
// absent container is not an error; calling it again does nothing. A task
// removed before it finished reports exit code 137 from then on.
func (c *Container) Cleanup(ctx context.Context) error {
	c.closeStdin()
	if c.isRemoved() {
		return nil
	}
	// Settle the final status first, so Status stays answerable afterwards.
	if _, err := c.state(ctx); err != nil && !errors.Is(err, orchestra.ErrContainerNotFound) {
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
	c.forget()
	c.driver.logger.Debug("container removed", "task", c.taskID, "container", c.name)
	return nil
}

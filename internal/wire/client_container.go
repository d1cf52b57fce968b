package wire

import (
	"context"
	"io"
	"sync"
	"sync/atomic"

	"github.com/jtarchie/pocketci/orchestra"
	"github.com/jtarchie/pocketci/proto/driverv1"
)

// clientContainer is the host side of a container in a plugin. It holds
// the one cache of a finished status: done is final, so polling it costs no
// call. Its twin is server_container.go.
type clientContainer struct {
	driver *clientDriver
	ref    *driverv1.ContainerRef
	id     string
	// follower is false for a 1.3 plugin's container that cannot stream its
	// output live.
	follower bool
	// run is the Run stream that started it; stdin feeds its task. Cleanup
	// ends both.
	run, stdin *liveConn
	// stopLife stops watching the caller's context for the Run stream.
	stopLife func() bool
	cleaned  atomic.Bool

	mu   sync.Mutex
	done *containerStatus
}

var _ orchestra.Container = (*clientContainer)(nil)

type containerStatus struct {
	done     bool
	exitCode int
}

var _ orchestra.ContainerStatus = (*containerStatus)(nil)

func (s *containerStatus) IsDone() bool  { return s.done }
func (s *containerStatus) ExitCode() int { return s.exitCode }

// newContainer is the container of a RunContainer or GetContainer answer;
// fallbackID is its ID when the plugin's protocol (1.3) carries none.
func (d *clientDriver) newContainer(resp *driverv1.RunContainerResponse, fallbackID string) *clientContainer {
	ref := resp.GetContainer()
	ref.Driver = d.handle
	id := resp.GetContainerId()
	if id == "" {
		id = fallbackID
	}
	return &clientContainer{driver: d, ref: ref, id: id, follower: resp.GetLogFollower()}
}

// ID is the container's ID, for GetContainer.
func (c *clientContainer) ID() string { return c.id }

// Status reports the container's state, from the cache once it is done.
func (c *clientContainer) Status(ctx context.Context) (orchestra.ContainerStatus, error) {
	if st, ok := c.final(); ok {
		return st, nil
	}
	resp, err := c.driver.client.rpc.Status(ctx, c.ref, statusCallOption)
	if err != nil {
		return nil, c.driver.wrap("Status", err)
	}
	if err := c.driver.client.checkExitCode("Status", int64(resp.GetExitCode())); err != nil {
		return nil, err
	}
	st := &containerStatus{done: resp.GetDone(), exitCode: int(resp.GetExitCode())}
	if st.done {
		c.cacheExit(st.exitCode)
	}
	return st, nil
}

// final is the cached finished status.
func (c *clientContainer) final() (*containerStatus, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.done, c.done != nil
}

// cacheExit records the final exit code.
func (c *clientContainer) cacheExit(code int) {
	c.mu.Lock()
	if c.done == nil {
		c.done = &containerStatus{done: true, exitCode: code}
	}
	c.mu.Unlock()
}

// Logs writes the container's output from the start, over a bulk
// connection; with follow, live until the task exited.
func (c *clientContainer) Logs(ctx context.Context, stdout, stderr io.Writer, follow bool) error {
	if follow && !c.follower {
		return c.logsAfterExit(ctx, stdout, stderr)
	}
	req := &driverv1.BulkRequest{Kind: &driverv1.BulkRequest_Logs{
		Logs: &driverv1.LogsRequest{Container: c.ref, Follow: follow, DeadlineUnixNano: deadlineOf(ctx)},
	}}
	conn, stop, err := c.driver.client.dialBulk(ctx, req)
	if err != nil {
		return c.driver.client.fail("Logs", err)
	}
	defer stop()
	defer conn.Close()
	outcome, err := c.driver.client.readOutput("Logs", conn, stdout, stderr, c.cacheExit)
	if err != nil {
		return c.driver.client.streamError(ctx, "Logs", err)
	}
	return c.driver.wrap("Logs", outcome)
}

// outputError is the caller's writer failing: Logs returns it as it is.
type outputError struct{ err error }

func (e *outputError) Error() string { return "write output: " + e.err.Error() }
func (e *outputError) Unwrap() error { return e.err }

func writeOutput(w io.Writer, p []byte) error {
	if _, err := w.Write(p); err != nil {
		return &outputError{err}
	}
	return nil
}

// Cleanup removes the container in the plugin, then ends its Run stream and
// its stdin.
func (c *clientContainer) Cleanup(ctx context.Context) error {
	err := c.driver.cleanup(&c.cleaned, "Cleanup", func() error {
		_, err := c.driver.client.rpc.Cleanup(ctx, c.ref)
		return err
	})
	if err != nil {
		return err
	}
	if c.stopLife != nil {
		c.stopLife()
	}
	c.run.end()
	c.stdin.end()
	return nil
}

func deadlineOf(ctx context.Context) int64 {
	if dl, ok := ctx.Deadline(); ok {
		return dl.UnixNano()
	}
	return 0
}

// FinalStatus returns the finished status that c, a container of this
// client layer, has cached. The host asks it first, so that a finished
// task's Status neither crosses the wire nor restarts a dead plugin.
func FinalStatus(c orchestra.Container) (orchestra.ContainerStatus, bool) {
	cc, ok := c.(*clientContainer)
	if !ok {
		return nil, false
	}
	return cc.final()
}

// CarryFinal gives to, the same container found again in a restarted
// plugin, the finished status from had cached.
func CarryFinal(from, to orchestra.Container) {
	st, ok := FinalStatus(from)
	if dst, isClient := to.(*clientContainer); ok && isClient {
		dst.cacheExit(st.ExitCode())
	}
}

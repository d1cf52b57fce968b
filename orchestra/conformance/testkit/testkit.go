// Package testkit is the small set of helpers every driver's tests need:
// wait until a container is done, run a task to its end, a buffer that
// several goroutines may write, and a logger that writes to the test. The
// conformance suite uses the same helpers.
package testkit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/jtarchie/pocketci/orchestra"
)

// PollInterval is how often WaitDone asks a container for its status.
const PollInterval = 25 * time.Millisecond

// WaitDone polls c's Status until it reports done or ctx ends, and returns
// the final status. A Status error, or a nil status, ends the wait with an
// error.
func WaitDone(ctx context.Context, c orchestra.Container) (orchestra.ContainerStatus, error) {
	return WaitDoneEvery(ctx, c, PollInterval)
}

// WaitDoneEvery is WaitDone polling every interval (a benchmark that
// measures through it wants a short one).
func WaitDoneEvery(ctx context.Context, c orchestra.Container, interval time.Duration) (orchestra.ContainerStatus, error) {
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		st, err := c.Status(ctx)
		if err != nil {
			return nil, fmt.Errorf("status: %w", err)
		}
		if st == nil {
			return nil, errors.New("status: got a nil ContainerStatus and no error")
		}
		if st.IsDone() {
			return st, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for the container to be done: %w", ctx.Err())
		case <-ticker.C:
		}
	}
}

// Result is what running a task to its end gave.
type Result struct {
	Container orchestra.Container
	ExitCode  int
	Stdout    []byte
	Stderr    []byte
}

// RunToEnd runs task on d, waits until it is done and fetches its logs.
func RunToEnd(ctx context.Context, d orchestra.Driver, task orchestra.Task) (Result, error) {
	c, err := d.RunContainer(ctx, task)
	if err != nil {
		return Result{}, fmt.Errorf("task %q: run container: %w", task.ID, err)
	}
	if c == nil {
		return Result{}, fmt.Errorf("task %q: RunContainer returned a nil container and no error", task.ID)
	}
	r, err := ResultOf(ctx, c)
	if err != nil {
		return Result{}, fmt.Errorf("task %q: %w", task.ID, err)
	}
	return r, nil
}

// ResultOf waits until the running container c is done and fetches its logs.
func ResultOf(ctx context.Context, c orchestra.Container) (Result, error) {
	st, err := WaitDone(ctx, c)
	if err != nil {
		return Result{}, err
	}
	var out, errb bytes.Buffer
	if err := c.Logs(ctx, &out, &errb, false); err != nil {
		return Result{}, fmt.Errorf("logs: %w", err)
	}
	return Result{Container: c, ExitCode: st.ExitCode(), Stdout: out.Bytes(), Stderr: errb.Bytes()}, nil
}

// SafeBuffer is a bytes.Buffer that several goroutines may use at once (a
// following Logs writes from its own).
type SafeBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write appends p.
func (b *SafeBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// Bytes is a copy of what was written.
func (b *SafeBuffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return bytes.Clone(b.buf.Bytes())
}

// String is what was written.
func (b *SafeBuffer) String() string { return string(b.Bytes()) }

// Len is how many bytes were written.
func (b *SafeBuffer) Len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Len()
}

// Logger is a logger at level that writes to t's log while t runs.
func Logger(t testing.TB, level slog.Level) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: level}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}

// MustWaitDone is WaitDone that ends the test on an error, within timeout.
func MustWaitDone(t testing.TB, c orchestra.Container, timeout time.Duration) orchestra.ContainerStatus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	st, err := WaitDone(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// MustRunToEnd is RunToEnd that ends the test on an error.
func MustRunToEnd(t testing.TB, ctx context.Context, d orchestra.Driver, task orchestra.Task) Result {
	t.Helper()
	r, err := RunToEnd(ctx, d, task)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

package docker

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/client"

	"github.com/jtarchie/pocketci/orchestra"
	"github.com/jtarchie/pocketci/orchestra/conformance/testkit"
)

const testImage = "busybox"

// requireDocker skips (or fails, when ORCHESTRA_REQUIRE_DOCKER=1) a test
// when no engine answers or the offline busybox image is missing.
func requireDocker(tb testing.TB) {
	tb.Helper()
	miss := tb.Skipf
	if os.Getenv("ORCHESTRA_REQUIRE_DOCKER") == "1" {
		miss = tb.Fatalf
	}
	cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		miss("docker client: %v", err)
		return
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := cli.Ping(ctx); err != nil {
		miss("no Docker engine answers (set ORCHESTRA_REQUIRE_DOCKER=1 to fail instead): %v", err)
		return
	}
	if _, err := cli.ImageInspect(ctx, "busybox:latest"); err != nil {
		miss("image busybox:latest is missing (run plugins/docker/scripts/busybox-image.sh): %v", err)
	}
}

// testLogger writes the driver's log into the test's log.
func testLogger(tb testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{tb}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ tb testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.tb.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// newNamespace returns a fresh namespace for a test.
func newNamespace(prefix string) string {
	var buf [4]byte
	_, _ = rand.Read(buf[:])
	return "dt-" + prefix + "-" + hex.EncodeToString(buf[:])
}

// newTestDriver returns a driver in a fresh namespace with the default
// config; at the end of the test it is closed and the engine is asked that
// nothing of the namespace is left.
func newTestDriver(tb testing.TB, prefix string) (*Driver, string) {
	tb.Helper()
	return newTestDriverWith(tb, prefix, Config{})
}

// newTestDriverWith is newTestDriver with cfg.
func newTestDriverWith(tb testing.TB, prefix string, cfg Config) (*Driver, string) {
	tb.Helper()
	requireDocker(tb)
	ns := newNamespace(prefix)
	d, err := New(ns, cfg, maybeTestLogger(tb))
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	tb.Cleanup(func() {
		if err := d.Close(); err != nil {
			tb.Errorf("Close: %v", err)
		}
		left, err := Leaks(context.Background(), Config{}, ns)
		if err != nil {
			tb.Errorf("Leaks: %v", err)
		}
		if len(left) > 0 {
			tb.Errorf("after Close, namespace %q still has %v", ns, left)
		}
	})
	return d, ns
}

// maybeTestLogger is testLogger with -v, else nil (no log).
func maybeTestLogger(tb testing.TB) *slog.Logger {
	if testing.Verbose() {
		return testLogger(tb)
	}
	return nil
}

// waitDone polls c until done.
func waitDone(ctx context.Context, tb testing.TB, c orchestra.Container) orchestra.ContainerStatus {
	tb.Helper()
	st, err := testkit.WaitDone(ctx, c)
	if err != nil {
		tb.Fatal(err)
	}
	return st
}

type runResult struct {
	container orchestra.Container
	exitCode  int
	stdout    string
	stderr    string
}

// runToEnd runs task, waits for it and returns its logs.
func runToEnd(ctx context.Context, tb testing.TB, d orchestra.Driver, task orchestra.Task) runResult {
	tb.Helper()
	c, err := d.RunContainer(ctx, task)
	if err != nil {
		tb.Fatalf("RunContainer(%q): %v", task.ID, err)
	}
	r, err := logsWhenDone(ctx, c)
	if err != nil {
		tb.Fatalf("task %q: %v", task.ID, err)
	}
	return r
}

// logsWhenDone waits for c and returns its exit code and logs; it may run
// in any goroutine.
func logsWhenDone(ctx context.Context, c orchestra.Container) (runResult, error) {
	st, err := testkit.WaitDone(ctx, c)
	if err != nil {
		return runResult{}, err
	}
	var out, errb bytes.Buffer
	if err := c.Logs(ctx, &out, &errb, false); err != nil {
		return runResult{}, fmt.Errorf("Logs: %w", err)
	}
	return runResult{container: c, exitCode: st.ExitCode(), stdout: out.String(), stderr: errb.String()}, nil
}

func testContext(tb testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	tb.Cleanup(cancel)
	return ctx
}

package docker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/docker/docker/client"

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
		return testkit.Logger(tb, slog.LevelDebug)
	}
	return nil
}

func testContext(tb testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	tb.Cleanup(cancel)
	return ctx
}

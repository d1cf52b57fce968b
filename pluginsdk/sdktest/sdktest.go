// Package sdktest runs a driver through the real plugin protocol in a test,
// with no binary to build: the SDK's gRPC server and the host's client,
// bulk socket included, connected over unix sockets inside the test
// process. A driver that passes the conformance suite through it behaves
// the same as a plugin binary built with pluginsdk.Serve.
//
//	func TestConformanceThroughTheWire(t *testing.T) {
//		init := sdktest.InitFunc(t, "mydriver", mydriver.New)
//		conformance.Run(t, conformance.Options{
//			New: func(ns string) (orchestra.Driver, error) { return init(ns, nil) },
//		})
//	}
package sdktest

import (
	"context"
	"log/slog"
	"testing"

	"github.com/jtarchie/pocketci/internal/wire"
	"github.com/jtarchie/pocketci/orchestra"
)

// InitFunc serves init as the plugin called name for the rest of t and
// returns an InitFunc whose drivers are init's, reached across the wire:
// every call, task, byte of stdin and of output goes through the protocol
// exactly as it would between orchestra and a plugin process. The logger
// passed to the returned InitFunc is ignored; init's drivers log to t.
// Everything is closed when t ends.
func InitFunc(t testing.TB, name string, init orchestra.InitFunc) orchestra.InitFunc {
	t.Helper()
	logger := slog.New(slog.NewTextHandler(&testWriter{t: t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	client, stop, err := wire.Harness(name, init, logger)
	if err != nil {
		t.Fatalf("sdktest: serve %s: %v", name, err)
	}
	t.Cleanup(stop)
	return func(namespace string, _ *slog.Logger) (orchestra.Driver, error) {
		return client.Open(context.Background(), namespace)
	}
}

// testWriter sends the plugin's log lines to t while it runs.
type testWriter struct {
	t testing.TB
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.t.Logf("plugin: %s", p)
	return len(p), nil
}

// Package sdktest runs a driver through the real plugin protocol in a test,
// with no binary to build: the SDK's gRPC server and the host's client,
// bulk socket included, connected over unix sockets inside the test
// process. A driver that passes the conformance suite through it behaves
// the same as a plugin binary built with pluginsdk.Serve.
//
//	func TestConformanceThroughTheWire(t *testing.T) {
//		p := sdktest.Provider(t, mydriver.Provider())
//		conformance.Run(t, conformance.Options{
//			New: func(ns string) (orchestra.Driver, error) {
//				return p.NewDriver(t.Context(), ns, nil, nil)
//			},
//		})
//	}
package sdktest

import (
	"log/slog"
	"testing"

	"github.com/jtarchie/pocketci/internal/pluginproc"
	"github.com/jtarchie/pocketci/orchestra"
)

// Provider serves p as a plugin for the rest of t and returns a provider
// whose drivers are p's, reached across the wire: every call, config, task,
// byte of stdin and of output goes through the protocol exactly as it would
// between orchestra and a plugin process. The logger passed to NewDriver is
// ignored; the plugin's drivers log to t. Everything is closed when t ends.
func Provider(t testing.TB, p orchestra.DriverProvider) orchestra.DriverProvider {
	t.Helper()
	logger := slog.New(slog.NewTextHandler(&testWriter{t: t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	client, stop, err := pluginproc.Harness(p, logger)
	if err != nil {
		t.Fatalf("sdktest: serve %s: %v", p.Name(), err)
	}
	t.Cleanup(stop)
	return client.Provider()
}

// testWriter sends the plugin's log lines to t while it runs.
type testWriter struct {
	t testing.TB
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.t.Logf("plugin: %s", p)
	return len(p), nil
}

package docker

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/docker/docker/client"

	"github.com/jtarchie/pocketci/orchestra"
)

// engineProxy is a proxy in front of the real engine, on a unix socket of
// its own. It counts the requests it passed on and, when failDelete is
// set, answers the first container DELETE with a 500, as an engine that
// cannot remove a container at first would.
type engineProxy struct {
	host       string // unix:///… address of the proxy
	failDelete bool
	failed     atomic.Int32
	requests   atomic.Int64
}

// startEngineProxy serves a proxy to the engine the environment names
// until the test ends.
func startEngineProxy(t *testing.T, failDelete bool) *engineProxy {
	t.Helper()
	requireDocker(t)
	real, err := client.NewClientWithOpts(client.FromEnv)
	if err != nil {
		t.Fatal(err)
	}
	upstream, err := url.Parse(real.DaemonHost())
	real.Close()
	if err != nil {
		t.Fatal(err)
	}
	network, addr := upstream.Scheme, upstream.Host
	if network == "unix" {
		addr = upstream.Path
	}
	if network != "unix" && network != "tcp" {
		t.Fatalf("cannot proxy the engine at %s", upstream)
	}
	p := &engineProxy{failDelete: failDelete}
	proxy := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.Out.URL.Scheme = "http"
			r.Out.URL.Host = "docker"
		},
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var dialer net.Dialer
			return dialer.DialContext(ctx, network, addr)
		}},
		FlushInterval: -1,
	}
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.requests.Add(1)
		if p.failDelete && r.Method == http.MethodDelete && strings.Contains(r.URL.Path, "/containers/") && p.failed.CompareAndSwap(0, 1) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusInternalServerError)
			_, _ = w.Write([]byte(`{"message":"injected failure: container cannot be removed yet"}`))
			return
		}
		proxy.ServeHTTP(w, r)
	})
	sock := filepath.Join(t.TempDir(), "engine.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	p.host = "unix://" + sock
	return p
}

// TestCloseRetriesAfterFailure makes the engine refuse the first container
// removal of Close: Close reports it, the driver still refuses new work,
// the container is still there, and a second Close removes it.
func TestCloseRetriesAfterFailure(t *testing.T) {
	engine := startEngineProxy(t, true)
	d, ns := newTestDriverWith(t, "closeretry", Config{Host: engine.host})
	ctx := testContext(t)
	c, err := d.RunContainer(ctx, orchestra.Task{ID: "stays", Image: testImage, Command: []string{"sleep", "60"},
		Mounts: orchestra.Mounts{{Name: "vol", Path: "vol"}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err == nil || !strings.Contains(err.Error(), "injected failure") {
		t.Fatalf("Close with a failing engine: %v, want the engine's error", err)
	}
	if engine.failed.Load() != 1 {
		t.Fatal("the proxy never failed a removal")
	}
	if _, err := d.RunContainer(ctx, orchestra.Task{ID: "late", Image: testImage, Command: []string{"true"}}); !errors.Is(err, orchestra.ErrClosed) {
		t.Fatalf("RunContainer after a failed Close: %v, want ErrClosed", err)
	}
	left, err := Leaks(ctx, Config{}, ns)
	// The container is left, and its volume too (in use by it).
	if err != nil || len(left) != 2 || !strings.Contains(strings.Join(left, " "), "container") {
		t.Fatalf("after the failed Close the namespace has %v (%v), want the container and its volume", left, err)
	}
	if err := d.Close(); err != nil {
		t.Fatalf("retried Close: %v", err)
	}
	if left, err := Leaks(ctx, Config{}, ns); err != nil || len(left) != 0 {
		t.Fatalf("after the retried Close the namespace has %v (%v)", left, err)
	}
	if err := d.Close(); err != nil {
		t.Fatalf("Close after a successful Close: %v", err)
	}
	_ = c
}

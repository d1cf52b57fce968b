package k8s

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/jtarchie/pocketci/orchestra"
	"github.com/jtarchie/pocketci/orchestra/conformance/testkit"
)

const testImage = "busybox"

// requireCluster skips (or fails, when ORCHESTRA_REQUIRE_K8S=1) a test when
// no cluster answers or its node lacks the offline busybox image. It
// returns the configuration that takes everything from the environment
// (the zero Config).
func requireCluster(tb testing.TB) Config {
	tb.Helper()
	miss := tb.Skipf
	if os.Getenv("ORCHESTRA_REQUIRE_K8S") == "1" {
		miss = tb.Fatalf
	}
	var cfg Config
	s, err := cfg.resolve()
	if err != nil {
		miss("no cluster configured (run make cluster and export KUBECONFIG; ORCHESTRA_REQUIRE_K8S=1 fails instead of skipping): %v", err)
		return Config{}
	}
	client, err := kubernetes.NewForConfig(s.rest)
	if err != nil {
		miss("client: %v", err)
		return Config{}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	nodes, err := client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		miss("the cluster at %s does not answer (run make cluster): %v", s.rest.Host, err)
		return Config{}
	}
	for _, n := range nodes.Items {
		for _, img := range n.Status.Images {
			for _, name := range img.Names {
				if name == "docker.io/library/busybox:latest" {
					return cfg
				}
			}
		}
	}
	miss("no node of the cluster at %s has docker.io/library/busybox:latest (make cluster imports it)", s.rest.Host)
	return Config{}
}

// verboseLogger is the test's log when -v is on, else nil (discard).
func verboseLogger(tb testing.TB) *slog.Logger {
	if testing.Verbose() {
		return testLogger(tb)
	}
	return nil
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
	return "kt-" + prefix + "-" + hex.EncodeToString(buf[:])
}

// newTestDriver returns a driver in a fresh namespace configured from the
// environment; at the end of the test it is closed and the cluster is
// asked that nothing of the namespace is left.
func newTestDriver(tb testing.TB, ns string) *Driver {
	tb.Helper()
	return newTestDriverWith(tb, ns, requireCluster(tb))
}

// newTestDriverWith is newTestDriver with cfg.
func newTestDriverWith(tb testing.TB, ns string, cfg Config) *Driver {
	tb.Helper()
	d, err := New(ns, cfg, verboseLogger(tb))
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	tb.Cleanup(func() {
		if err := d.Close(); err != nil {
			tb.Errorf("Close: %v", err)
		}
		expectNoLeaks(tb, cfg, ns)
	})
	return d
}

func expectNoLeaks(tb testing.TB, cfg Config, ns string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	left, err := Leaks(ctx, cfg, ns)
	if err != nil {
		tb.Errorf("Leaks: %v", err)
	}
	if len(left) > 0 {
		tb.Errorf("after Close, namespace %q still has %v", ns, left)
	}
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
	st := waitDone(ctx, tb, c)
	var out, errb bytes.Buffer
	if err := c.Logs(ctx, &out, &errb, false); err != nil {
		tb.Fatalf("Logs(%q): %v", task.ID, err)
	}
	return runResult{container: c, exitCode: st.ExitCode(), stdout: out.String(), stderr: errb.String()}
}

func testContext(tb testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	tb.Cleanup(cancel)
	return ctx
}

package wire

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/jtarchie/pocketci/internal/bulk"
	"github.com/jtarchie/pocketci/orchestra"
	"github.com/jtarchie/pocketci/orchestra/conformance/testkit"
)

// connect serves the fake driver through the harness (the real gRPC
// server, with Serve's options, and the bulk socket) and returns the host's
// client for it.
func connect(t testing.TB) *Client {
	t.Helper()
	c, _ := connectServer(t)
	return c
}

// connectServer is connect, also returning the plugin's side.
func connectServer(t testing.TB) (*Client, *Server) {
	t.Helper()
	c, srv, stop, err := harness(fakeProvider, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	return c, srv
}

func TestLogsContextCrossesTheWire(t *testing.T) {
	d := open(t, connect(t))
	c, err := d.RunContainer(context.Background(), orchestra.Task{ID: "bl", Command: []string{"blocklogs"}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	err = c.Logs(ctx, io.Discard, io.Discard, true)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Logs(follow) past its deadline: %v, want context.DeadlineExceeded", err)
	}
	// A container the plugin does not know: the sentinel crosses the logs path too.
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	err = c.Logs(context.Background(), io.Discard, io.Discard, false)
	if !errors.Is(err, orchestra.ErrClosed) || !strings.Contains(err.Error(), "plugin fake") {
		t.Fatalf("Logs after Close: %v, want ErrClosed naming the plugin", err)
	}
}

func open(t testing.TB, c *Client) orchestra.Driver {
	t.Helper()
	d, err := c.Open(context.Background(), "ns", OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func TestInfo(t *testing.T) {
	info, err := connect(t).Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if info.Name != "fake" || info.SDKVersion != SDKVersion || info.ProtocolVersion != ProtocolVersion {
		t.Fatalf("info = %+v", info)
	}
}

func TestTaskFieldsCrossTheWire(t *testing.T) {
	task := orchestra.Task{
		Command:         []string{"echo", "a b", ""},
		ContainerLimits: orchestra.ContainerLimits{CPU: 512, CPUKind: "performance", Memory: 64 << 20},
		Env:             map[string]string{"A": "1", "B": "x=y z"},
		ID:              "t1",
		Image:           "busybox:latest",
		Mounts:          orchestra.Mounts{{Name: "v1", Path: "/a", SizeGB: 3}, {Name: "v2", Path: "/b/c"}},
		Privileged:      true,
		User:            "nobody",
		WorkDir:         "repo/sub",
	}
	got := taskFromProto(taskToProto(task))
	if fmt.Sprintf("%#v", got) != fmt.Sprintf("%#v", task) {
		t.Fatalf("task changed on the wire:\n got %#v\nwant %#v", got, task)
	}
}

func TestLogsLargeOutputInChunks(t *testing.T) {
	d := open(t, connect(t))
	const size = 16<<20 + 123
	c, err := d.RunContainer(context.Background(), orchestra.Task{ID: "big", Command: []string{"out", fmt.Sprint(size)}})
	if err != nil {
		t.Fatal(err)
	}
	if st := testkit.MustWaitDone(t, c, 30*time.Second); st.ExitCode() != 2 {
		t.Fatalf("exit code = %d, want 2", st.ExitCode())
	}
	var want bytes.Buffer
	_ = writePattern(&want, size)
	for _, follow := range []bool{false, true} {
		out := &maxWriteRecorder{h: sha256.New()}
		var errOut bytes.Buffer
		if err := c.Logs(context.Background(), out, &errOut, follow); err != nil {
			t.Fatal(err)
		}
		wantSum := sha256.Sum256(want.Bytes())
		if out.n != size || hex.EncodeToString(out.h.Sum(nil)) != hex.EncodeToString(wantSum[:]) {
			t.Fatalf("follow=%v: stdout %d bytes, sha mismatch or size (want %d)", follow, out.n, size)
		}
		if out.max > bulk.MaxFrame {
			t.Fatalf("follow=%v: a chunk of %d bytes exceeds the %d chunk size", follow, out.max, bulk.MaxFrame)
		}
		if errOut.String() != "done\n" {
			t.Fatalf("stderr = %q", errOut.String())
		}
	}
}

type maxWriteRecorder struct {
	h interface {
		Write([]byte) (int, error)
		Sum([]byte) []byte
	}
	n   int
	max int
}

func (m *maxWriteRecorder) Write(p []byte) (int, error) {
	m.n += len(p)
	m.max = max(m.max, len(p))
	return m.h.Write(p)
}

// patternReader yields n bytes without holding them.
type patternReader struct{ left int }

func (r *patternReader) Read(p []byte) (int, error) {
	if r.left == 0 {
		return 0, io.EOF
	}
	n := min(len(p), r.left)
	for i := range n {
		p[i] = byte(r.left - i)
	}
	r.left -= n
	return n, nil
}

func TestStdinStreamsAfterRunContainerAndItsContextEnd(t *testing.T) {
	d := open(t, connect(t))
	const size = 32<<20 + 7
	pr, pw := io.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	c, err := d.RunContainer(ctx, orchestra.Task{ID: "cat", Command: []string{"cat"}, Stdin: pr})
	if err != nil {
		t.Fatal(err)
	}
	cancel() // stdin must keep flowing after RunContainer's ctx ended
	h := sha256.New()
	written := make(chan struct{})
	go func() {
		defer close(written)
		_, err := io.Copy(io.MultiWriter(pw, h), &patternReader{left: size})
		pw.CloseWithError(err)
	}()
	testkit.MustWaitDone(t, c, 30*time.Second)
	<-written
	var out bytes.Buffer
	if err := c.Logs(context.Background(), &out, io.Discard, false); err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("%d %s\n", size, hex.EncodeToString(h.Sum(nil)))
	if out.String() != want {
		t.Fatalf("plugin read %q, want %q", out.String(), want)
	}
}

func TestSameTaskIDClosesTheSecondStdin(t *testing.T) {
	d := open(t, connect(t))
	c1, err := d.RunContainer(context.Background(), orchestra.Task{ID: "once", Command: []string{"cat"}, Stdin: strings.NewReader("abc")})
	if err != nil {
		t.Fatal(err)
	}
	testkit.MustWaitDone(t, c1, 30*time.Second)
	// A second stdin for the same task must not block forever: nothing reads it.
	c2, err := d.RunContainer(context.Background(), orchestra.Task{ID: "once", Command: []string{"cat"}, Stdin: &patternReader{left: 8 << 20}})
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := c2.Logs(context.Background(), &out, io.Discard, false); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out.String(), "3 ") {
		t.Fatalf("second run of the same ID = %q, want the first run's output", out.String())
	}
}

func TestErrorsKeepTheirIdentity(t *testing.T) {
	c := connect(t)
	d := open(t, c)
	ctx := context.Background()

	_, err := d.GetContainer(ctx, "nope")
	assertIs(t, err, orchestra.ErrContainerNotFound, "GetContainer")

	_, err = d.RunContainer(ctx, orchestra.Task{ID: "f", Command: []string{"fail"}})
	assertIs(t, err, orchestra.ErrInvalidTask, "RunContainer")

	_, err = c.Open(ctx, "bad", OpenOptions{})
	assertIs(t, err, orchestra.ErrInvalidTask, "Open")

	_, err = c.Open(ctx, "ns", OpenOptions{Config: []byte(`{"nope": 1}`)})
	assertIs(t, err, orchestra.ErrInvalidConfig, "Open with an unknown config field")

	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	_, err = d.RunContainer(ctx, orchestra.Task{ID: "late", Command: []string{"out", "1"}})
	assertIs(t, err, orchestra.ErrClosed, "RunContainer after Close")
	if err := d.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func assertIs(t *testing.T, err, target error, op string) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("%s: errors.Is(%v, %v) = false", op, err, target)
	}
	if !strings.Contains(err.Error(), "plugin fake") {
		t.Fatalf("%s: error %q does not name the plugin", op, err)
	}
}

func TestContextCrossesTheWire(t *testing.T) {
	d := open(t, connect(t))
	c, err := d.RunContainer(context.Background(), orchestra.Task{ID: "b", Command: []string{"block"}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = c.Status(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Status past its deadline: %v, want context.DeadlineExceeded", err)
	}
	if time.Since(start) > 10*time.Second {
		t.Fatalf("Status returned after %s, long past its deadline", time.Since(start))
	}
	ctx, cancel = context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	_, err = c.Status(ctx)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled Status: %v, want context.Canceled", err)
	}
}

func TestPanicBecomesAnError(t *testing.T) {
	d := open(t, connect(t))
	_, err := d.RunContainer(context.Background(), orchestra.Task{ID: "p", Command: []string{"panic"}})
	if err == nil || !strings.Contains(err.Error(), "panicked") {
		t.Fatalf("RunContainer of a panicking driver: %v, want a panic error", err)
	}
	c, err := d.RunContainer(context.Background(), orchestra.Task{ID: "after", Command: []string{"out", "5"}})
	if err != nil {
		t.Fatalf("the plugin should live on after a panic: %v", err)
	}
	testkit.MustWaitDone(t, c, 30*time.Second)
}

func TestFinishedStatusIsCachedOnTheHost(t *testing.T) {
	d := open(t, connect(t))
	c, err := d.RunContainer(context.Background(), orchestra.Task{ID: "s", Command: []string{"out", "1"}})
	if err != nil {
		t.Fatal(err)
	}
	testkit.MustWaitDone(t, c, 30*time.Second)
	// Close the driver in the plugin: a cached status needs no RPC.
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	st, err := c.Status(context.Background())
	if err != nil || !st.IsDone() || st.ExitCode() != 2 {
		t.Fatalf("cached status = %v, %v", st, err)
	}
}

func TestContainerIDFindsItAgain(t *testing.T) {
	c := connect(t)
	d := open(t, c)
	ctx := context.Background()
	run, err := d.RunContainer(ctx, orchestra.Task{ID: "findme", Command: []string{"out", "3"}})
	if err != nil {
		t.Fatal(err)
	}
	if run.ID() != "findme" {
		t.Fatalf("ID() = %q, want the driver's %q", run.ID(), "findme")
	}
	found, err := d.GetContainer(ctx, run.ID())
	if err != nil {
		t.Fatal(err)
	}
	testkit.MustWaitDone(t, found, 30*time.Second)
	var out bytes.Buffer
	if err := found.Logs(ctx, &out, io.Discard, false); err != nil || out.Len() != 3 {
		t.Fatalf("Logs of the found container: %q, %v", out.String(), err)
	}
	if err := found.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestConfigReachesTheDriverAndStaysSecret(t *testing.T) {
	c := connect(t)
	ctx := context.Background()
	const secret = "hunter2-very-secret"
	for _, label := range []string{"first", "second"} {
		d, err := c.Open(ctx, "ns-"+label, OpenOptions{Config: []byte(`{"label":"` + label + `"}`)})
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		run, err := d.RunContainer(ctx, orchestra.Task{ID: "l", Command: []string{"label"}, WorkDir: "w",
			ContainerLimits: orchestra.ContainerLimits{CPUKind: "shared"}, Mounts: orchestra.Mounts{{Name: "v", Path: "v", SizeGB: 2}}})
		if err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		if err := run.Logs(ctx, &out, io.Discard, false); err != nil || out.String() != label+" w shared 2\n" {
			t.Fatalf("driver %s saw %q (%v)", label, out.String(), err)
		}
	}
	tests := []struct {
		name   string
		config string
		target error
		names  string
	}{
		{"unknown field", `{"nope":"` + secret + `"}`, orchestra.ErrInvalidConfig, "nope"},
		{"wrong type", `{"label": 3, "secret":"` + secret + `"}`, orchestra.ErrInvalidConfig, "label"},
		{"refused by Validate", `{"label":"refuse","secret":"` + secret + `"}`, orchestra.ErrInvalidConfig, "label"},
		{"driver error quoting the secret", `{"secret":"` + secret + `"}`, orchestra.ErrInvalidTask, "namespace"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ns := "ns"
			if tt.target == orchestra.ErrInvalidTask {
				ns = "bad"
			}
			_, err := c.Open(ctx, ns, OpenOptions{Config: []byte(tt.config)})
			if !errors.Is(err, tt.target) || !strings.Contains(err.Error(), tt.names) || strings.Contains(err.Error(), secret) {
				t.Fatalf("Open: %v; want %v naming %q, without the secret", err, tt.target, tt.names)
			}
			if tt.target == orchestra.ErrInvalidConfig {
				err := c.CheckConfig(ctx, []byte(tt.config))
				if !errors.Is(err, tt.target) || strings.Contains(err.Error(), secret) {
					t.Fatalf("CheckConfig: %v; want %v without the secret", err, tt.target)
				}
			}
		})
	}
}

func TestBadInputNeverReachesThePlugin(t *testing.T) {
	c := connect(t)
	d := open(t, c)
	ctx := context.Background()
	tests := []struct {
		name  string
		call  func() error
		field string
	}{
		{"namespace with NUL", func() error { _, err := c.Open(ctx, "a\x00b", OpenOptions{}); return err }, "namespace"},
		{"WorkDir with ..", func() error {
			_, err := d.RunContainer(ctx, orchestra.Task{ID: "x", Command: []string{"panic"}, WorkDir: "../up"})
			return err
		}, "WorkDir"},
		{"empty task ID", func() error {
			_, err := d.RunContainer(ctx, orchestra.Task{Command: []string{"panic"}})
			return err
		}, "task ID"},
		{"mount path with ..", func() error {
			_, err := d.RunContainer(ctx, orchestra.Task{ID: "x", Command: []string{"panic"}, Mounts: orchestra.Mounts{{Name: "v", Path: "a/../b"}}})
			return err
		}, "Mounts[0].Path"},
		{"empty volume name", func() error { _, err := d.CreateVolume(ctx, "", 0); return err }, "volume name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// The fake driver panics on "panic": an invalid task that got
			// through would say "panicked" instead.
			err := tt.call()
			if !errors.Is(err, orchestra.ErrInvalidTask) || !strings.Contains(err.Error(), tt.field) || strings.Contains(err.Error(), "panicked") {
				t.Fatalf("error %v: want ErrInvalidTask naming %q, raised before the plugin", err, tt.field)
			}
		})
	}
}

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
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/jtarchie/pocketci/orchestra"
	"github.com/jtarchie/pocketci/orchestra/conformance"
	"github.com/jtarchie/pocketci/proto/driverv1"
)

// connect serves the fake driver over a real gRPC connection on a unix
// socket, with the same interceptors Serve installs, and returns the host's
// client for it.
func connect(t testing.TB) *Client {
	t.Helper()
	c, _ := connectServer(t)
	return c
}

// connectServer is connect, also returning the plugin's side.
func connectServer(t testing.TB) (*Client, *server) {
	t.Helper()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	srv := newServer("fake", "test", func(ns string, _ *slog.Logger) (orchestra.Driver, error) {
		if ns == "bad" {
			return nil, fmt.Errorf("namespace %q: %w", ns, orchestra.ErrInvalidTask)
		}
		return newFakeDriver(ns), nil
	}, logger)
	sock := filepath.Join(t.TempDir(), "plugin.sock")
	lis, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(serverOptions(logger)...)
	driverv1.RegisterDriverServer(gs, srv)
	go gs.Serve(lis)
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		gs.Stop()
	})
	c := NewClient("fake", driverv1.NewDriverClient(conn))
	if _, err := c.Info(context.Background()); err != nil {
		t.Fatal(err)
	}
	if asProtocol12 {
		// A 1.2 host: RunContainer is a unary call.
		c.run = false
	}
	if overBulk {
		bl, err := srv.listenBulk(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { bl.Close() })
		c.UseBulk(srv.bulkAddr)
	}
	return c, srv
}

// overBulk makes connect carry stdin and logs over the bulk socket.
var overBulk bool

// asProtocol12 makes connect's client start tasks as protocol 1.2 did, with
// the unary RunContainer instead of the Run stream.
var asProtocol12 bool

// TestAsProtocol12 runs the tests of the task lifecycle again over the
// unary RunContainer of protocol 1.2, which a 1.2 plugin serves.
func TestAsProtocol12(t *testing.T) {
	asProtocol12 = true
	defer func() { asProtocol12 = false }()
	for name, test := range map[string]func(*testing.T){
		"stdin":               TestStdinStreamsAfterRunContainerAndItsContextEnd,
		"second stdin":        TestSameTaskIDClosesTheSecondStdin,
		"errors":              TestErrorsKeepTheirIdentity,
		"logs context":        TestLogsContextCrossesTheWire,
		"follow caches final": TestFinishedStatusIsCachedOnTheHost,
		"fields":              TestTaskFieldsCrossTheWire,
	} {
		t.Run(name, test)
	}
}

// TestOverBulk runs the tests of stdin and logs again with the bulk socket
// (protocol 1.2) carrying them instead of gRPC streams.
func TestOverBulk(t *testing.T) {
	overBulk = true
	defer func() { overBulk = false }()
	for name, test := range map[string]func(*testing.T){
		"large logs":          TestLogsLargeOutputInChunks,
		"stdin":               TestStdinStreamsAfterRunContainerAndItsContextEnd,
		"second stdin":        TestSameTaskIDClosesTheSecondStdin,
		"errors":              TestErrorsKeepTheirIdentity,
		"logs context":        TestLogsContextCrossesTheWire,
		"follow caches final": TestFinishedStatusIsCachedOnTheHost,
		"panic":               TestPanicBecomesAnError,
	} {
		t.Run(name, test)
	}
}

func TestLogsContextCrossesTheWire(t *testing.T) {
	d := open(t, connect(t))
	c, err := d.RunContainer(context.Background(), orchestra.Task{ID: "bl", Command: []string{"blocklogs"}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	err = c.(orchestra.LogFollower).FollowLogs(ctx, io.Discard, io.Discard)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("FollowLogs past its deadline: %v, want context.DeadlineExceeded", err)
	}
	// A container the plugin does not know: the sentinel crosses the logs path too.
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	err = c.Logs(context.Background(), io.Discard, io.Discard)
	if !errors.Is(err, orchestra.ErrClosed) || !strings.Contains(err.Error(), "plugin fake") {
		t.Fatalf("Logs after Close: %v, want ErrClosed naming the plugin", err)
	}
}

func open(t testing.TB, c *Client) orchestra.Driver {
	t.Helper()
	d, err := c.Open(context.Background(), "ns")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func waitDone(t testing.TB, c orchestra.Container) orchestra.ContainerStatus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := conformance.WaitDone(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func TestInfo(t *testing.T) {
	info, err := connect(t).Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if info.Name != "fake" || info.SDKVersion != SDKVersion || info.ProtocolVersion != "1.3" {
		t.Fatalf("info = %+v", info)
	}
}

func TestTaskFieldsCrossTheWire(t *testing.T) {
	task := orchestra.Task{
		Command:         []string{"echo", "a b", ""},
		ContainerLimits: orchestra.ContainerLimits{CPU: 512, Memory: 64 << 20},
		Env:             map[string]string{"A": "1", "B": "x=y z"},
		ID:              "t1",
		Image:           "busybox:latest",
		Mounts:          orchestra.Mounts{{Name: "v1", Path: "/a"}, {Name: "v2", Path: "/b/c"}},
		Privileged:      true,
		User:            "nobody",
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
	if st := waitDone(t, c); st.ExitCode() != 2 {
		t.Fatalf("exit code = %d, want 2", st.ExitCode())
	}
	var want bytes.Buffer
	_ = writePattern(&want, size)
	for _, follow := range []bool{false, true} {
		out := &maxWriteRecorder{h: sha256.New()}
		var errOut bytes.Buffer
		if follow {
			err = c.(orchestra.LogFollower).FollowLogs(context.Background(), out, &errOut)
		} else {
			err = c.Logs(context.Background(), out, &errOut)
		}
		if err != nil {
			t.Fatal(err)
		}
		wantSum := sha256.Sum256(want.Bytes())
		if out.n != size || hex.EncodeToString(out.h.Sum(nil)) != hex.EncodeToString(wantSum[:]) {
			t.Fatalf("follow=%v: stdout %d bytes, sha mismatch or size (want %d)", follow, out.n, size)
		}
		if out.max > chunkSize {
			t.Fatalf("follow=%v: a chunk of %d bytes exceeds the %d chunk size", follow, out.max, chunkSize)
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
	waitDone(t, c)
	<-written
	var out bytes.Buffer
	if err := c.Logs(context.Background(), &out, io.Discard); err != nil {
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
	waitDone(t, c1)
	// A second stdin for the same task must not block forever: nothing reads it.
	c2, err := d.RunContainer(context.Background(), orchestra.Task{ID: "once", Command: []string{"cat"}, Stdin: &patternReader{left: 8 << 20}})
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := c2.Logs(context.Background(), &out, io.Discard); err != nil {
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

	_, err := d.(orchestra.ContainerFinder).GetContainer(ctx, "nope")
	assertIs(t, err, orchestra.ErrContainerNotFound, "GetContainer")

	_, err = d.RunContainer(ctx, orchestra.Task{ID: "f", Command: []string{"fail"}})
	assertIs(t, err, orchestra.ErrInvalidTask, "RunContainer")

	_, err = c.Open(ctx, "bad")
	assertIs(t, err, orchestra.ErrInvalidTask, "Open")

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
	waitDone(t, c)
}

func TestFinishedStatusIsCachedOnTheHost(t *testing.T) {
	d := open(t, connect(t))
	c, err := d.RunContainer(context.Background(), orchestra.Task{ID: "s", Command: []string{"out", "1"}})
	if err != nil {
		t.Fatal(err)
	}
	waitDone(t, c)
	// Close the driver in the plugin: a cached status needs no RPC.
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	st, err := c.Status(context.Background())
	if err != nil || !st.IsDone() || st.ExitCode() != 2 {
		t.Fatalf("cached status = %v, %v", st, err)
	}
}

func TestOptionalInterfacesFollowTheDriver(t *testing.T) {
	d := open(t, connect(t))
	if _, ok := d.(orchestra.ContainerFinder); !ok {
		t.Fatal("the fake driver implements ContainerFinder; its plugin adapter must too")
	}
	c, err := d.RunContainer(context.Background(), orchestra.Task{ID: "o", Command: []string{"out", "1"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := c.(orchestra.LogFollower); !ok {
		t.Fatal("the fake container implements LogFollower; its plugin adapter must too")
	}
}

func TestLogHandlerSpeaksHclogJSON(t *testing.T) {
	var buf bytes.Buffer
	slog.New(NewLogHandler(&buf, slog.LevelDebug)).Warn("disk low", "free", 3, "path", "/x")
	line := buf.String()
	for _, want := range []string{`"@level":"warn"`, `"@message":"disk low"`, `"@timestamp":"`, `"free":3`, `"path":"/x"`} {
		if !strings.Contains(line, want) {
			t.Errorf("log line %s lacks %s", line, want)
		}
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
		{"namespace with NUL", func() error { _, err := c.Open(ctx, "a\x00b"); return err }, "namespace"},
		{"empty task ID", func() error {
			_, err := d.RunContainer(ctx, orchestra.Task{Command: []string{"panic"}})
			return err
		}, "task ID"},
		{"mount path with ..", func() error {
			_, err := d.RunContainer(ctx, orchestra.Task{ID: "x", Command: []string{"panic"}, Mounts: orchestra.Mounts{{Name: "v", Path: "a/../b"}}})
			return err
		}, "Mounts[0].Path"},
		{"empty volume name", func() error { _, err := d.CreateVolume(ctx, "", 0); return err }, "volume name"},
		{"GetContainer with NUL", func() error {
			_, err := d.(orchestra.ContainerFinder).GetContainer(ctx, "a\x00b")
			return err
		}, "task ID"},
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

//go:build linux

package native

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jtarchie/pocketci/orchestra"
	"github.com/jtarchie/pocketci/orchestra/conformance"
	"github.com/jtarchie/pocketci/pluginsdk/sdktest"
)

// useRoot points the driver at a private root for the test.
func useRoot(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	t.Setenv(RootEnv, root)
	return root
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
}

func newDriver(t *testing.T, namespace string) orchestra.Driver {
	t.Helper()
	d, err := New(namespace, testLogger(t))
	if err != nil {
		t.Fatalf("New(%q): %v", namespace, err)
	}
	t.Cleanup(func() {
		if err := d.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return d
}

// TestConformance runs the suite against native compiled in and through
// the plugin protocol (sdktest: the SDK's gRPC server and the host's
// client inside this process, no binary built; the shim is this test
// binary, as it is the plugin binary in bin/). The shipped binary itself
// is run by the repository's TestDriversThroughPlugins.
func TestConformance(t *testing.T) {
	useRoot(t)
	t.Run("in process", func(t *testing.T) {
		conformance.Run(t, conformance.Options{
			New:   func(ns string) (orchestra.Driver, error) { return New(ns, testLogger(t)) },
			Leaks: Leaks,
		})
	})
	t.Run("through the plugin protocol", func(t *testing.T) {
		init := sdktest.InitFunc(t, "native", New)
		conformance.Run(t, conformance.Options{
			New:   func(ns string) (orchestra.Driver, error) { return init(ns, nil) },
			Leaks: Leaks,
		})
	})
}

// brokenDriver wraps a driver with one fault to show that the suite catches it.
type brokenDriver struct {
	orchestra.Driver
	fault string
	runs  int
}

func (b *brokenDriver) Close() error {
	if b.fault == "no close" {
		return nil
	}
	return b.Driver.Close()
}

func (b *brokenDriver) RunContainer(ctx context.Context, task orchestra.Task) (orchestra.Container, error) {
	switch b.fault {
	case "wrong output":
		task.Command = []string{"echo", "wrong"}
	case "leak env":
		env := map[string]string{"CT_HOST_SECRET": os.Getenv("CT_HOST_SECRET")}
		for k, v := range task.Env {
			env[k] = v
		}
		task.Env = env
	case "rerun":
		b.runs++
		task.ID = fmt.Sprintf("%s-%d", task.ID, b.runs)
	}
	return b.Driver.RunContainer(ctx, task)
}

func TestConformanceCatchesFaults(t *testing.T) {
	useRoot(t)
	t.Setenv("CT_HOST_SECRET", "from the host")
	tests := []struct {
		fault   string
		cases   string
		wantErr string
	}{
		{"wrong output", `^happy path$`, `stdout: expected "hello\n", got "wrong\n"`},
		{"no close", `^happy path$`, "still has: [directory "},
		{"leak env", `^environment variables$`, "host environment leaked into the task: [CT_HOST_SECRET]"},
		{"rerun", `^same task id runs once$`, `ran more than once or not at all: expected the counter file to hold "x\n", got "x\nx\nx\n"`},
	}
	for _, tt := range tests {
		t.Run(tt.fault, func(t *testing.T) {
			var namespaces []string
			results := conformance.RunAll(t.Context(), conformance.Options{
				New: func(ns string) (orchestra.Driver, error) {
					namespaces = append(namespaces, ns)
					d, err := New(ns, testLogger(t))
					return &brokenDriver{Driver: d, fault: tt.fault}, err
				},
				Leaks: Leaks,
				Run:   regexp.MustCompile(tt.cases),
			}, nil)
			for _, ns := range namespaces {
				d, _ := New(ns, testLogger(t))
				_ = d.Close()
			}
			if len(results) != 1 {
				t.Fatalf("expected 1 result, got %d", len(results))
			}
			if results[0].Passed || !strings.Contains(results[0].Error, tt.wantErr) {
				t.Fatalf("expected a failure containing %q, got passed=%v error %q", tt.wantErr, results[0].Passed, results[0].Error)
			}
		})
	}
}

// plainDriver hides the optional interfaces of native's containers.
type plainDriver struct{ orchestra.Driver }

func (p plainDriver) RunContainer(ctx context.Context, task orchestra.Task) (orchestra.Container, error) {
	c, err := p.Driver.RunContainer(ctx, task)
	if err != nil {
		return nil, err
	}
	return struct{ orchestra.Container }{c}, nil
}

// TestConformanceSkipsWhatTheDriverLacks: a case that needs LogFollower is
// reported skipped, with the reason, for a driver without it.
func TestConformanceSkipsWhatTheDriverLacks(t *testing.T) {
	useRoot(t)
	results := conformance.RunAll(t.Context(), conformance.Options{
		New: func(ns string) (orchestra.Driver, error) {
			d, err := New(ns, testLogger(t))
			return plainDriver{d}, err
		},
		Leaks: Leaks,
		Run:   regexp.MustCompile(`^(no final newline follow|stream order)$`),
	}, nil)
	if len(results) != 2 {
		t.Fatalf("expected 2 results, got %d", len(results))
	}
	if r := results[0]; !r.Skipped || r.Passed || !strings.Contains(r.Error, "orchestra.LogFollower") {
		t.Fatalf("no final newline follow: expected skipped for the missing LogFollower, got %+v", r)
	}
	if r := results[1]; !r.Passed || r.Skipped {
		t.Fatalf("stream order: expected it to pass on Logs alone, got %+v", r)
	}
}

func waitDone(t *testing.T, c orchestra.Container) orchestra.ContainerStatus {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	st, err := conformance.WaitDone(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func logsOf(t *testing.T, c orchestra.Container) (string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	if err := c.Logs(t.Context(), &out, &errb); err != nil {
		t.Fatalf("Logs: %v", err)
	}
	return out.String(), errb.String()
}

func TestExitCodeOfSignal(t *testing.T) {
	useRoot(t)
	d := newDriver(t, "signal")
	tests := []struct {
		name    string
		command string
		want    int
	}{
		{"sigkill", "kill -9 $$", 137},
		{"sigterm", "kill -15 $$", 143},
		{"exit 42", "exit 42", 42},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := d.RunContainer(t.Context(), orchestra.Task{ID: tt.name, Command: []string{"sh", "-c", tt.command}})
			if err != nil {
				t.Fatal(err)
			}
			if got := waitDone(t, c).ExitCode(); got != tt.want {
				t.Fatalf("exit code: expected %d, got %d", tt.want, got)
			}
		})
	}
}

// alive reports whether pid is a live (not zombie) process, asking /proc.
func alive(pid int) bool {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	return err == nil && !isZombie(stat)
}

func TestCloseKillsRunningTasks(t *testing.T) {
	root := useRoot(t)
	d, err := New("close-kills", testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	c, err := d.RunContainer(t.Context(), orchestra.Task{ID: "sleeper", Command: []string{"sh", "-c", "sleep 1000 & sleep 1000"}})
	if err != nil {
		t.Fatal(err)
	}
	pid := c.(*Container).pid
	var before []string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if before, err = Leaks("close-kills"); err != nil {
			t.Fatal(err)
		}
		if len(before) >= 4 { // directory, shim, sh, and at least one sleep
			break
		}
	}
	if len(before) < 4 {
		t.Fatalf("leak probe before Close: expected the directory and the running processes, got %v", before)
	}
	start := time.Now()
	if err := d.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	t.Logf("Close with 3 running processes took %s", time.Since(start))
	if alive(pid) {
		t.Fatalf("process %d still alive after Close", pid)
	}
	left, err := Leaks("close-kills")
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 0 {
		t.Fatalf("after Close: expected nothing left, got %v", left)
	}
	if _, err := os.Stat(filepath.Join(root, "close-kills")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("namespace directory: expected it gone, stat gave %v", err)
	}
	if st, _ := c.Status(t.Context()); !st.IsDone() || st.ExitCode() != 137 {
		t.Fatalf("status after Close: expected done with 137, got done=%v code %d", st.IsDone(), st.ExitCode())
	}
	_, err = d.RunContainer(t.Context(), orchestra.Task{ID: "late", Command: []string{"true"}})
	if !errors.Is(err, orchestra.ErrClosed) {
		t.Fatalf("RunContainer after Close: expected ErrClosed, got %v", err)
	}
	if err := d.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestCloseRacesRunContainer(t *testing.T) {
	useRoot(t)
	d, err := New("close-race", testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	const n = 20
	var wg sync.WaitGroup
	containers := make([]orchestra.Container, n)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			containers[i], errs[i] = d.RunContainer(t.Context(), orchestra.Task{
				ID:      fmt.Sprintf("t%d", i),
				Command: []string{"sh", "-c", "sleep 1000 & sleep 1000"},
				Mounts:  orchestra.Mounts{{Name: "shared", Path: "/data"}},
			})
		})
		if i == n/2 {
			wg.Go(func() {
				if err := d.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			})
		}
	}
	wg.Wait()
	if err := d.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	started := 0
	for i := range n {
		if errs[i] != nil {
			if !errors.Is(errs[i], orchestra.ErrClosed) {
				t.Errorf("task %d: expected success or ErrClosed, got %v", i, errs[i])
			}
			continue
		}
		started++
		if st, _ := containers[i].Status(t.Context()); !st.IsDone() {
			t.Errorf("task %d: still running after Close", i)
		}
	}
	left, err := Leaks("close-race")
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 0 {
		t.Fatalf("after Close: expected nothing left, got %v", left)
	}
	t.Logf("%d of %d tasks started before Close", started, n)
}

func TestBackgroundChildrenDieWithTask(t *testing.T) {
	useRoot(t)
	d := newDriver(t, "background")
	c, err := d.RunContainer(t.Context(), orchestra.Task{ID: "bg", Command: []string{"sh", "-c", "sleep 1000 & echo started"}})
	if err != nil {
		t.Fatal(err)
	}
	if code := waitDone(t, c).ExitCode(); code != 0 {
		t.Fatalf("exit code: expected 0, got %d", code)
	}
	procs, err := processesUnder(filepath.Join(Root(), "background"))
	if err != nil {
		t.Fatal(err)
	}
	if len(procs) != 0 {
		t.Fatalf("after the task's main process exited: expected no process left, got %v", procs)
	}
}

func TestStdinFlowsAfterContextCancelled(t *testing.T) {
	useRoot(t)
	d := newDriver(t, "stdin-cancel")
	pr, pw := io.Pipe()
	ctx, cancel := context.WithCancel(t.Context())
	c, err := d.RunContainer(ctx, orchestra.Task{ID: "cat", Command: []string{"cat"}, Stdin: pr})
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	time.Sleep(50 * time.Millisecond)
	if _, err := io.WriteString(pw, "written after cancel\n"); err != nil {
		t.Fatalf("write stdin: %v", err)
	}
	_ = pw.Close()
	if code := waitDone(t, c).ExitCode(); code != 0 {
		t.Fatalf("exit code: expected 0, got %d", code)
	}
	if out, _ := logsOf(t, c); out != "written after cancel\n" {
		t.Fatalf("stdout: expected %q, got %q", "written after cancel\n", out)
	}
}

// signalWriter is a writer that reports when its content contains want.
type signalWriter struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	want string
	seen chan struct{}
	once sync.Once
}

func (w *signalWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n, _ := w.buf.Write(p)
	if strings.Contains(w.buf.String(), w.want) {
		w.once.Do(func() { close(w.seen) })
	}
	return n, nil
}

func (w *signalWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

func TestFollowLogsStreamsLive(t *testing.T) {
	useRoot(t)
	d := newDriver(t, "follow")
	pr, pw := io.Pipe()
	c, err := d.RunContainer(t.Context(), orchestra.Task{
		ID:      "follow",
		Command: []string{"sh", "-c", "echo first; echo oops >&2; read line; echo \"second $line\""},
		Stdin:   pr,
	})
	if err != nil {
		t.Fatal(err)
	}
	out := &signalWriter{want: "first\n", seen: make(chan struct{})}
	var errb bytes.Buffer
	followed := make(chan error, 1)
	go func() { followed <- c.(orchestra.LogFollower).FollowLogs(t.Context(), out, &errb) }()
	select {
	case <-out.seen:
	case <-time.After(10 * time.Second):
		t.Fatalf("FollowLogs did not stream %q within 10s, got %q", "first\n", out.String())
	}
	if st, _ := c.Status(t.Context()); st.IsDone() {
		t.Fatal("the task was done before its stdin was closed; the test proves nothing")
	}
	_, _ = io.WriteString(pw, "line\n")
	_ = pw.Close()
	select {
	case err := <-followed:
		if err != nil {
			t.Fatalf("FollowLogs: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("FollowLogs did not return after the task exited")
	}
	if got := out.String(); got != "first\nsecond line\n" {
		t.Fatalf("followed stdout: expected %q, got %q", "first\nsecond line\n", got)
	}
	if got := errb.String(); got != "oops\n" {
		t.Fatalf("followed stderr: expected %q, got %q", "oops\n", got)
	}
}

func TestGetContainer(t *testing.T) {
	useRoot(t)
	d := newDriver(t, "finder")
	c, err := d.RunContainer(t.Context(), orchestra.Task{ID: "known", Command: []string{"true"}})
	if err != nil {
		t.Fatal(err)
	}
	finder := d.(orchestra.ContainerFinder)
	got, err := finder.GetContainer(t.Context(), "known")
	if err != nil || got != c {
		t.Fatalf("GetContainer(known): expected the running container, got %v, %v", got, err)
	}
	if _, err := finder.GetContainer(t.Context(), "unknown"); !errors.Is(err, orchestra.ErrContainerNotFound) {
		t.Fatalf("GetContainer(unknown): expected ErrContainerNotFound, got %v", err)
	}
	waitDone(t, c)
	if err := c.Cleanup(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := finder.GetContainer(t.Context(), "known"); !errors.Is(err, orchestra.ErrContainerNotFound) {
		t.Fatalf("GetContainer after Cleanup: expected ErrContainerNotFound, got %v", err)
	}
}

func TestFinishedTaskFoundByAnotherInstance(t *testing.T) {
	useRoot(t)
	first, err := New("reattach", testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	task := orchestra.Task{
		ID:      "done before restart",
		Command: []string{"sh", "-c", "echo x >> ./data/count; echo out; echo err >&2; exit 7"},
		Mounts:  orchestra.Mounts{{Name: "data", Path: "/data"}},
	}
	c, err := first.RunContainer(t.Context(), task)
	if err != nil {
		t.Fatal(err)
	}
	waitDone(t, c)
	// The first instance is abandoned (as when a plugin dies); a new one
	// of the same namespace takes over.
	second := newDriver(t, "reattach")
	found, err := second.(orchestra.ContainerFinder).GetContainer(t.Context(), task.ID)
	if err != nil {
		t.Fatalf("GetContainer from a new instance: %v", err)
	}
	st, err := found.Status(t.Context())
	if err != nil || !st.IsDone() || st.ExitCode() != 7 {
		t.Fatalf("status of the found container: expected done with 7, got %v %v", st, err)
	}
	if out, errOut := logsOf(t, found); out != "out\n" || errOut != "err\n" {
		t.Fatalf("logs of the found container: expected %q %q, got %q %q", "out\n", "err\n", out, errOut)
	}
	again, err := second.RunContainer(t.Context(), task)
	if err != nil {
		t.Fatal(err)
	}
	if again != found {
		t.Fatal("RunContainer with the same ID on the new instance did not return the found container")
	}
	rd, err := second.RunContainer(t.Context(), orchestra.Task{ID: "read", Command: []string{"cat", "./data/count"}, Mounts: task.Mounts})
	if err != nil {
		t.Fatal(err)
	}
	waitDone(t, rd)
	if out, _ := logsOf(t, rd); out != "x\n" {
		t.Fatalf("counter: expected the command to have run once (%q), got %q", "x\n", out)
	}
	if err := found.Cleanup(t.Context()); err != nil {
		t.Fatalf("Cleanup of the found container: %v", err)
	}
	if _, err := second.(orchestra.ContainerFinder).GetContainer(t.Context(), task.ID); !errors.Is(err, orchestra.ErrContainerNotFound) {
		t.Fatalf("GetContainer after Cleanup: expected ErrContainerNotFound, got %v", err)
	}
	if err := first.Close(); err != nil {
		t.Fatalf("Close of the abandoned instance: %v", err)
	}
}

func TestRegistered(t *testing.T) {
	useRoot(t)
	init, ok := orchestra.Get("native")
	if !ok {
		t.Fatalf("orchestra.Get(native): not registered; names %v", orchestra.Names())
	}
	d, err := init("registered", testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if d.Name() != "native" {
		t.Fatalf("Name: expected native, got %q", d.Name())
	}
}

func TestNamespaceNames(t *testing.T) {
	root := useRoot(t)
	for _, ns := range []string{"", "nul\x00"} {
		if _, err := New(ns, nil); !errors.Is(err, orchestra.ErrInvalidTask) {
			t.Errorf("New(%q): expected ErrInvalidTask, got %v", ns, err)
		}
	}
	// Any other namespace is one directory right below the root.
	for _, ns := range []string{"a/b", "..", ".", "x..y", "_lead", "-lead", "with space", "ünï", strings.Repeat("n", 300)} {
		t.Run(ns, func(t *testing.T) {
			d := newDriver(t, ns)
			c, err := d.RunContainer(t.Context(), orchestra.Task{ID: "t", Command: []string{"true"}})
			if err != nil {
				t.Fatal(err)
			}
			waitDone(t, c)
			entries, _ := filepath.Glob(filepath.Join(root, "*", "tasks", "*", "exit"))
			if len(entries) != 1 {
				t.Fatalf("expected one task under one namespace directory of %s, got %v", root, entries)
			}
			if err := d.Close(); err != nil {
				t.Fatal(err)
			}
			if left, _ := os.ReadDir(root); len(left) != 0 {
				t.Fatalf("after Close, the root still has %v", left)
			}
		})
	}
}

func TestInvalidTask(t *testing.T) {
	useRoot(t)
	d := newDriver(t, "invalid")
	tests := []struct {
		name string
		task orchestra.Task
	}{
		{"no id", orchestra.Task{Command: []string{"true"}}},
		{"no command", orchestra.Task{ID: "x"}},
		{"bad env", orchestra.Task{ID: "x", Command: []string{"true"}, Env: map[string]string{"A=B": "c"}}},
		{"root mount", orchestra.Task{ID: "x", Command: []string{"true"}, Mounts: orchestra.Mounts{{Name: "v", Path: "/"}}}},
		{"same mount twice", orchestra.Task{ID: "x", Command: []string{"true"}, Mounts: orchestra.Mounts{{Name: "v", Path: "/a"}, {Name: "w", Path: "a/"}}}},
		{"unknown user", orchestra.Task{ID: "x", Command: []string{"true"}, User: "no-such-user-here"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := d.RunContainer(t.Context(), tt.task)
			if !errors.Is(err, orchestra.ErrInvalidTask) {
				t.Fatalf("expected ErrInvalidTask, got %v", err)
			}
		})
	}
	if _, err := d.RunContainer(t.Context(), orchestra.Task{ID: "missing", Command: []string{"no-such-command-xyz"}}); err == nil ||
		!strings.Contains(err.Error(), "not found") {
		t.Fatalf("unknown command: expected a not found error, got %v", err)
	}
}

func TestUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("switching user needs root")
	}
	// t.TempDir is private to root; the task's user must reach its directory.
	root, err := os.MkdirTemp("", "native-user-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(root) })
	if err := os.Chmod(root, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv(RootEnv, root)
	d := newDriver(t, "user")
	c, err := d.RunContainer(t.Context(), orchestra.Task{ID: "nobody", Command: []string{"sh", "-c", "id -u; touch ./mine"}, User: "nobody"})
	if err != nil {
		t.Fatal(err)
	}
	st := waitDone(t, c)
	out, errOut := logsOf(t, c)
	if st.ExitCode() != 0 || out != "65534\n" {
		t.Fatalf("expected exit 0 and uid 65534, got exit %d stdout %q stderr %q", st.ExitCode(), out, errOut)
	}
}

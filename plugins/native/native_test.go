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
	"github.com/jtarchie/pocketci/orchestra/conformance/testkit"
)

// useRoot points the driver at a private root for the test.
func useRoot(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	t.Setenv(RootEnv, root)
	return root
}

// open is a driver of namespace with the default config, as the provider
// builds it.
func open(namespace string, logger *slog.Logger) (orchestra.Driver, error) {
	return Provider().NewDriver(context.Background(), namespace, nil, logger)
}

func newDriver(t *testing.T, namespace string) orchestra.Driver {
	t.Helper()
	d, err := open(namespace, testkit.Logger(t, slog.LevelWarn))
	if err != nil {
		t.Fatalf("open(%q): %v", namespace, err)
	}
	t.Cleanup(func() {
		if err := d.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return d
}

// TestConformance runs the suite against native compiled in. The suite
// through the plugin protocol runs in internal/protocoltest.
func TestConformance(t *testing.T) {
	useRoot(t)
	conformance.Run(t, conformance.Options{
		New:   func(ns string) (orchestra.Driver, error) { return open(ns, testkit.Logger(t, slog.LevelWarn)) },
		Leaks: Leaks,
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
					d, err := open(ns, testkit.Logger(t, slog.LevelWarn))
					return &brokenDriver{Driver: d, fault: tt.fault}, err
				},
				Leaks: Leaks,
				Run:   regexp.MustCompile(tt.cases),
			}, nil)
			for _, ns := range namespaces {
				d, _ := open(ns, testkit.Logger(t, slog.LevelWarn))
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

func logsOf(t *testing.T, c orchestra.Container) (string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	if err := c.Logs(t.Context(), &out, &errb, false); err != nil {
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
			if got := testkit.MustWaitDone(t, c, 30*time.Second).ExitCode(); got != tt.want {
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
	d, err := open("close-kills", testkit.Logger(t, slog.LevelWarn))
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
	d, err := open("close-race", testkit.Logger(t, slog.LevelWarn))
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
	if code := testkit.MustWaitDone(t, c, 30*time.Second).ExitCode(); code != 0 {
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
	if code := testkit.MustWaitDone(t, c, 30*time.Second).ExitCode(); code != 0 {
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

func TestLogsFollowStreamsLive(t *testing.T) {
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
	go func() { followed <- c.Logs(t.Context(), out, &errb, true) }()
	select {
	case <-out.seen:
	case <-time.After(10 * time.Second):
		t.Fatalf("Logs with follow did not stream %q within 10s, got %q", "first\n", out.String())
	}
	if st, _ := c.Status(t.Context()); st.IsDone() {
		t.Fatal("the task was done before its stdin was closed; the test proves nothing")
	}
	_, _ = io.WriteString(pw, "line\n")
	_ = pw.Close()
	select {
	case err := <-followed:
		if err != nil {
			t.Fatalf("Logs with follow: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Logs with follow did not return after the task exited")
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
	finder := d
	got, err := finder.GetContainer(t.Context(), "known")
	if err != nil || got != c {
		t.Fatalf("GetContainer(known): expected the running container, got %v, %v", got, err)
	}
	if _, err := finder.GetContainer(t.Context(), "unknown"); !errors.Is(err, orchestra.ErrContainerNotFound) {
		t.Fatalf("GetContainer(unknown): expected ErrContainerNotFound, got %v", err)
	}
	testkit.MustWaitDone(t, c, 30*time.Second)
	if err := c.Cleanup(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := finder.GetContainer(t.Context(), "known"); !errors.Is(err, orchestra.ErrContainerNotFound) {
		t.Fatalf("GetContainer after Cleanup: expected ErrContainerNotFound, got %v", err)
	}
}

func TestFinishedTaskFoundByAnotherInstance(t *testing.T) {
	useRoot(t)
	first, err := open("reattach", testkit.Logger(t, slog.LevelWarn))
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
	testkit.MustWaitDone(t, c, 30*time.Second)
	// The first instance is abandoned (as when a plugin dies); a new one
	// of the same namespace takes over.
	second := newDriver(t, "reattach")
	found, err := second.GetContainer(t.Context(), task.ID)
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
	testkit.MustWaitDone(t, rd, 30*time.Second)
	if out, _ := logsOf(t, rd); out != "x\n" {
		t.Fatalf("counter: expected the command to have run once (%q), got %q", "x\n", out)
	}
	if err := found.Cleanup(t.Context()); err != nil {
		t.Fatalf("Cleanup of the found container: %v", err)
	}
	if _, err := second.GetContainer(t.Context(), task.ID); !errors.Is(err, orchestra.ErrContainerNotFound) {
		t.Fatalf("GetContainer after Cleanup: expected ErrContainerNotFound, got %v", err)
	}
	if err := first.Close(); err != nil {
		t.Fatalf("Close of the abandoned instance: %v", err)
	}
}

func TestProvider(t *testing.T) {
	p := Provider()
	if p.Name() != "native" || p.EmptyConfig().DriverName() != "native" {
		t.Fatalf("Name %q, EmptyConfig().DriverName() %q: expected native", p.Name(), p.EmptyConfig().DriverName())
	}
	tests := []struct {
		raw     string
		want    Config
		wantErr string
	}{
		{``, Config{}, ""},
		{`{}`, Config{}, ""},
		{`{"root": "/var/lib/native"}`, Config{Root: "/var/lib/native"}, ""},
		{`{"root": "relative/secret-ish"}`, Config{}, `"root" must be an absolute path`},
		{`{"rooot": "/x"}`, Config{}, `unknown field "rooot"`},
	}
	for _, tt := range tests {
		t.Run(tt.raw, func(t *testing.T) {
			cfg, err := p.UnmarshalConfig([]byte(tt.raw))
			if tt.wantErr != "" {
				if !errors.Is(err, orchestra.ErrInvalidConfig) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("expected ErrInvalidConfig containing %q, got %v", tt.wantErr, err)
				}
				if strings.Contains(err.Error(), "secret-ish") {
					t.Fatalf("the error quotes the value: %v", err)
				}
				return
			}
			if err != nil || cfg != tt.want {
				t.Fatalf("expected %+v, got %+v, %v", tt.want, cfg, err)
			}
		})
	}
}

// TestTwoRootsSideBySide: two instances of one namespace in one process
// with different roots are two separate worlds.
func TestTwoRootsSideBySide(t *testing.T) {
	rootA, rootB := t.TempDir(), t.TempDir()
	var drivers []orchestra.Driver
	for _, root := range []string{rootA, rootB} {
		d, err := Provider().NewDriver(t.Context(), "side", Config{Root: root}, testkit.Logger(t, slog.LevelWarn))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = d.Close() })
		drivers = append(drivers, d)
	}
	for i, d := range drivers {
		c, err := d.RunContainer(t.Context(), orchestra.Task{ID: "t", Command: []string{"sh", "-c", fmt.Sprint("echo ", i, " > data/f; cat data/f")},
			Mounts: orchestra.Mounts{{Name: "data", Path: "data"}}})
		if err != nil {
			t.Fatal(err)
		}
		testkit.MustWaitDone(t, c, 30*time.Second)
		if out, _ := logsOf(t, c); out != fmt.Sprint(i, "\n") {
			t.Fatalf("driver %d: expected its own run, got %q", i, out)
		}
	}
	for i, root := range []string{rootA, rootB} {
		b, err := os.ReadFile(filepath.Join(root, "side", "volumes", "data", "f"))
		if err != nil || string(b) != fmt.Sprint(i, "\n") {
			t.Fatalf("root %d: volume file %q, %v", i, b, err)
		}
		v, err := drivers[i].CreateVolume(t.Context(), "data", 0)
		if err != nil || v.Path() != filepath.Join(root, "side", "volumes", "data") {
			t.Fatalf("root %d: Volume.Path() = %q, %v", i, v.Path(), err)
		}
	}
}

func TestNamespaceNames(t *testing.T) {
	root := useRoot(t)
	for _, ns := range []string{"", "nul\x00"} {
		if _, err := open(ns, nil); !errors.Is(err, orchestra.ErrInvalidTask) {
			t.Errorf("open(%q): expected ErrInvalidTask, got %v", ns, err)
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
			testkit.MustWaitDone(t, c, 30*time.Second)
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
		{"negative size", orchestra.Task{ID: "x", Command: []string{"true"}, Mounts: orchestra.Mounts{{Name: "v", Path: "v", SizeGB: -1}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := d.RunContainer(t.Context(), tt.task)
			if !errors.Is(err, orchestra.ErrInvalidTask) {
				t.Fatalf("expected ErrInvalidTask, got %v", err)
			}
		})
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
	st := testkit.MustWaitDone(t, c, 30*time.Second)
	out, errOut := logsOf(t, c)
	if st.ExitCode() != 0 || out != "65534\n" {
		t.Fatalf("expected exit 0 and uid 65534, got exit %d stdout %q stderr %q", st.ExitCode(), out, errOut)
	}
}

// TestCommandNotStarted: a command that is not there, or cannot be run, is
// the task's failure as in a shell (RunContainer succeeds): 127 or 126 and
// a line on its stderr; Logs has no error.
func TestCommandNotStarted(t *testing.T) {
	useRoot(t)
	d := newDriver(t, "not-started")
	tests := []struct {
		name    string
		command []string
		code    int
		stderr  string
	}{
		{"bare name", []string{"no-such-command-xyz", "arg"}, 127, "no-such-command-xyz: command not found\n"},
		{"relative path", []string{"./nope"}, 127, "./nope: no such file or directory\n"},
		{"not executable", []string{"./data/plain"}, 126, "./data/plain: permission denied\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := d.RunContainer(t.Context(), orchestra.Task{ID: tt.name, Command: tt.command,
				Mounts: orchestra.Mounts{{Name: "data", Path: "data"}}})
			if err != nil {
				t.Fatalf("RunContainer: %v", err)
			}
			st := testkit.MustWaitDone(t, c, 30*time.Second)
			out, errOut := logsOf(t, c)
			if st.ExitCode() != tt.code || out != "" || errOut != tt.stderr {
				t.Fatalf("exit %d, stdout %q, stderr %q; want %d and stderr %q", st.ExitCode(), out, errOut, tt.code, tt.stderr)
			}
		})
		if tt.name == "relative path" {
			v, err := d.CreateVolume(t.Context(), "data", 0)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(v.Path(), "plain"), []byte("echo hi\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// TestWorkDir: WorkDir maps as mount paths do (native's working directory
// stands for the root): "/x" and "x" are both work/x, created when
// missing; relative commands and PWD follow it; an Env PWD is kept.
func TestWorkDir(t *testing.T) {
	useRoot(t)
	d := newDriver(t, "workdir")
	tests := []struct {
		name    string
		task    orchestra.Task
		wantOut string
	}{
		{"absolute", orchestra.Task{WorkDir: "/x/y", Command: []string{"sh", "-c", "pwd; echo $PWD"}}, "/work/x/y\n"},
		{"relative", orchestra.Task{WorkDir: "x/y", Command: []string{"/bin/pwd", "-P"}}, "/work/x/y\n"},
		{"in a volume", orchestra.Task{WorkDir: "repo/sub", Command: []string{"sh", "-c", "echo made > f; pwd"},
			Mounts: orchestra.Mounts{{Name: "repo", Path: "repo"}}}, "/work/repo/sub\n"},
		{"relative command", orchestra.Task{WorkDir: "repo/sub", Command: []string{"../run.sh"},
			Mounts: orchestra.Mounts{{Name: "repo", Path: "/repo"}}}, "ran\n"},
		{"own PWD", orchestra.Task{WorkDir: "x", Env: map[string]string{"PWD": "/mine"}, Command: []string{"printenv", "PWD"}}, "/mine\n"},
	}
	v, err := d.CreateVolume(t.Context(), "repo", 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(v.Path(), "run.sh"), []byte("#!/bin/sh\necho ran\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.task.ID = tt.name
			c, err := d.RunContainer(t.Context(), tt.task)
			if err != nil {
				t.Fatal(err)
			}
			st := testkit.MustWaitDone(t, c, 30*time.Second)
			out, errOut := logsOf(t, c)
			if st.ExitCode() != 0 || !strings.HasSuffix(out, tt.wantOut) {
				t.Fatalf("exit %d, stdout %q, stderr %q; want 0 and stdout ending in %q", st.ExitCode(), out, errOut, tt.wantOut)
			}
		})
	}
	if b, err := os.ReadFile(filepath.Join(v.Path(), "sub", "f")); err != nil || string(b) != "made\n" {
		t.Fatalf("a file written in WorkDir inside a volume: %q, %v", b, err)
	}
}

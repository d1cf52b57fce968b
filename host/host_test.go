package host

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/jtarchie/pocketci/orchestra"
	"github.com/jtarchie/pocketci/orchestra/conformance/testkit"
	"github.com/jtarchie/pocketci/plugins/native"
)

// fixture is the fake plugin binary, built once for the package's tests.
var fixture string

func TestMain(m *testing.M) {
	if dir := os.Getenv("HOST_TEST_HELPER_DIR"); dir != "" {
		helperHost(dir)
		return
	}
	if dir := os.Getenv("HOST_TEST_ORPHAN_DIR"); dir != "" {
		orphanHost(dir)
		return
	}
	if dir := os.Getenv("HOST_TEST_DETACH_DIR"); dir != "" {
		detachingHost(dir, os.Getenv("HOST_TEST_STATE"))
		return
	}
	dir, err := os.MkdirTemp("", "host-test-")
	if err != nil {
		panic(err)
	}
	fixture = filepath.Join(dir, "fakeplugin")
	// The fixture is the native driver: keep its namespaces (also those a
	// hostile fixture never closes) in the test's own directory.
	os.Setenv("POCKETCI_NATIVE_ROOT", filepath.Join(dir, "native"))
	out, err := exec.Command("go", "build", "-o", fixture, "./testdata/fakeplugin").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build fixture plugin: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	if code == 0 {
		// Every host was closed: none of its goroutines may be left.
		// go-plugin watches a reattached process by polling its PID once a
		// second; that goroutine ends with the process (TestDebugMode's
		// plugin is stopped last).
		if err := goleak.Find(goleak.IgnoreTopFunction("github.com/hashicorp/go-plugin/internal/cmdrunner.pidWait")); err != nil {
			fmt.Fprintf(os.Stderr, "goroutines leaked by the host: %v\n", err)
			out, _ := exec.Command("ps", "-o", "pid,stat,args", "--ppid", fmt.Sprint(os.Getpid())).CombinedOutput()
			fmt.Fprintf(os.Stderr, "child processes:\n%s", out)
			code = 1
		}
	}
	os.Exit(code)
}

// install copies the fixture into dir as pocketci-driver-name.
func install(t testing.TB, dir, name string, mode os.FileMode) string {
	t.Helper()
	data, err := os.ReadFile(fixture)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, Prefix+name)
	if err := os.WriteFile(path, data, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
	return path
}

// logBuffer is a concurrency-safe log sink for assertions.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func newHost(t *testing.T, dirs ...string) (*Host, *logBuffer) {
	t.Helper()
	logs := &logBuffer{}
	h, err := New(Config{Dirs: dirs, Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := h.Close(); err != nil {
			t.Errorf("host close: %v", err)
		}
		if _, err := os.Stat(h.socketDir); !os.IsNotExist(err) {
			t.Errorf("socket directory %s left after Close", h.socketDir)
		}
	})
	return h, logs
}

func privateDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestDiscovery(t *testing.T) {
	first, second := privateDir(t), privateDir(t)
	install(t, first, "alpha", 0o755)
	install(t, second, "alpha", 0o755) // shadowed
	install(t, second, "beta", 0o755)
	install(t, second, "noexec", 0o644)                                                // skipped
	install(t, second, "Bad Name", 0o755)                                              // skipped
	os.WriteFile(filepath.Join(second, "unrelated"), []byte("x"), 0o755)               // ignored
	os.WriteFile(filepath.Join(second, "pocketci-driver-"), []byte("x"), 0o755)        // no name
	os.WriteFile(filepath.Join(first, "pocketci-driver-alpha.txt"), []byte(""), 0o644) // invalid name, not executable

	h, logs := newHost(t, first, second, filepath.Join(t.TempDir(), "missing"))
	var got []string
	for _, p := range h.Plugins() {
		got = append(got, p.Name+"="+filepath.Dir(p.Path))
	}
	want := []string{"alpha=" + first, "beta=" + second}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("plugins = %v, want %v", got, want)
	}
	for _, line := range []string{"plugin shadowed", "not an executable", "invalid name"} {
		if !strings.Contains(logs.String(), line) {
			t.Errorf("logs lack %q:\n%s", line, logs)
		}
	}
	if _, err := h.Plugin("gamma"); err == nil || !strings.Contains(err.Error(), "pocketci-driver-gamma") {
		t.Errorf("Plugin(gamma) = %v, want an error naming the file it looked for", err)
	}
}

func TestDirsPrecedence(t *testing.T) {
	t.Setenv(PathEnv, "/env/one:/env/two")
	t.Setenv("HOME", "/home/someone")
	dirs := Dirs([]string{"/flag", "/env/one"})
	exe, _ := os.Executable()
	exe, _ = filepath.EvalSymlinks(exe)
	want := []string{"/flag", "/env/one", "/env/two", filepath.Dir(exe), "/home/someone/.local/share/pocketci/plugins"}
	if fmt.Sprint(dirs) != fmt.Sprint(want) {
		t.Fatalf("Dirs = %v\nwant %v", dirs, want)
	}
}

func TestTrust(t *testing.T) {
	tests := []struct {
		name   string
		setup  func(t *testing.T, dir string)
		plugin string
		want   string // in the refusal; empty: runs
	}{
		{"group writable binary", func(t *testing.T, dir string) { install(t, dir, "p", 0o775) }, "p", "writable by group or others"},
		{"world writable dir", func(t *testing.T, dir string) { install(t, dir, "p", 0o755); os.Chmod(dir, 0o777) }, "p", "directory"},
		{"listed in SHA256SUMS", func(t *testing.T, dir string) {
			install(t, dir, "p", 0o755)
			writeSums(t, dir, "p", "")
		}, "p", ""},
		{"not listed in SHA256SUMS", func(t *testing.T, dir string) {
			install(t, dir, "p", 0o755)
			install(t, dir, "q", 0o755)
			writeSums(t, dir, "q", "")
		}, "p", "not listed"},
		{"SHA256SUMS mismatch", func(t *testing.T, dir string) {
			install(t, dir, "p", 0o755)
			writeSums(t, dir, "p", strings.Repeat("ab", 32))
		}, "p", "pins"},
		{"malformed SHA256SUMS", func(t *testing.T, dir string) {
			install(t, dir, "p", 0o755)
			os.WriteFile(filepath.Join(dir, SumsFile), []byte("nonsense\n"), 0o644)
		}, "p", "line 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := privateDir(t)
			tt.setup(t, dir)
			h, _ := newHost(t, dir)
			p, err := h.Plugin(tt.plugin)
			if err != nil {
				t.Fatal(err)
			}
			_, err = p.Info(context.Background())
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Info: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Info: %v, want a refusal containing %q", err, tt.want)
			}
			if p.State() != StateStopped && p.State() != StateRefused {
				t.Fatalf("a refused plugin is %s", p.State())
			}
		})
	}
}

func writeSums(t *testing.T, dir, name, sum string) {
	t.Helper()
	if sum == "" {
		var err error
		sum, err = fileSHA256(filepath.Join(dir, Prefix+name))
		if err != nil {
			t.Fatal(err)
		}
	}
	line := fmt.Sprintf("%s  %s%s\n", sum, Prefix, name)
	if err := os.WriteFile(filepath.Join(dir, SumsFile), []byte(line), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestNameMismatchIsRefused(t *testing.T) {
	dir := privateDir(t)
	install(t, dir, "mine", 0o755)
	t.Setenv("FAKEPLUGIN_NAME", "theirs")
	h, _ := newHost(t, dir)
	p, _ := h.Plugin("mine")
	_, err := p.Open(context.Background(), "ns", OpenOptions{})
	if err == nil || !strings.Contains(err.Error(), `reports the name "theirs"`) {
		t.Fatalf("Open = %v, want a refusal naming both names", err)
	}
}

func TestStdoutBeforeHandshakeIsIgnored(t *testing.T) {
	dir := privateDir(t)
	install(t, dir, "noisy", 0o755)
	t.Setenv("FAKEPLUGIN_STDOUT", "hello from init|with|pipes")
	h, logs := newHost(t, dir)
	runEcho(t, h, "noisy")
	if !strings.Contains(logs.String(), "before its handshake") {
		t.Fatalf("the stray stdout was not logged:\n%s", logs)
	}
}

// runEcho runs echo through the plugin and checks its output.
func runEcho(t *testing.T, h *Host, name string) orchestra.Driver {
	t.Helper()
	p, err := h.Plugin(name)
	if err != nil {
		t.Fatal(err)
	}
	d, err := p.Open(context.Background(), "ns-"+strings.ReplaceAll(t.Name(), "/", "-"), OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c, err := d.RunContainer(context.Background(), orchestra.Task{ID: fmt.Sprint(time.Now().UnixNano()), Command: []string{"echo", "hi"}})
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := c.Logs(context.Background(), &out, io.Discard, true); err != nil {
		t.Fatal(err)
	}
	if out.String() != "hi\n" {
		t.Fatalf("output = %q", out.String())
	}
	return d
}

func TestOneProcessManyDrivers(t *testing.T) {
	dir := privateDir(t)
	install(t, dir, "shared", 0o755)
	h, _ := newHost(t, dir)
	p, _ := h.Plugin("shared")
	var pids []string
	for _, ns := range []string{"a", "b", "c"} {
		d, err := p.Open(context.Background(), ns, OpenOptions{})
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		pids = append(pids, pluginPID(t, p))
	}
	if pids[0] != pids[1] || pids[1] != pids[2] {
		t.Fatalf("three namespaces started plugin processes %v, want one", pids)
	}
}

func pluginPID(t *testing.T, p *Plugin) string {
	t.Helper()
	pid := p.PID()
	if pid <= 0 {
		t.Fatalf("plugin %s is not running", p.Name)
	}
	return fmt.Sprint(pid)
}

func TestCrashedPluginRestarts(t *testing.T) {
	dir := privateDir(t)
	install(t, dir, "fragile", 0o755)
	h, logs := newHost(t, dir)
	d := runEcho(t, h, "fragile")
	ctx := context.Background()
	finished, err := d.RunContainer(ctx, orchestra.Task{ID: "finished", Command: []string{"echo", "kept"}})
	if err != nil {
		t.Fatal(err)
	}
	waitStatus(t, finished)
	running, err := d.RunContainer(ctx, orchestra.Task{ID: "running", Command: []string{"sleep", "1000"}})
	if err != nil {
		t.Fatal(err)
	}

	p, _ := h.Plugin("fragile")
	pid := pluginPID(t, p)
	var n int
	fmt.Sscan(pid, &n)
	if err := syscall.Kill(n, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// The host notices at once, not at the next call.
	deadline := time.Now().Add(5 * time.Second)
	for p.State() != StateExited && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if p.State() != StateExited {
		t.Fatalf("state after kill -9 = %s, want exited", p.State())
	}
	if !strings.Contains(logs.String(), "plugin exited unexpectedly") {
		t.Fatalf("the crash was not logged:\n%s", logs)
	}

	// The driver reopens in a new process.
	c, err := d.RunContainer(ctx, orchestra.Task{ID: "after", Command: []string{"echo", "again"}})
	if err != nil {
		t.Fatalf("RunContainer after the crash: %v", err)
	}
	waitStatus(t, c)
	if newPID := pluginPID(t, p); newPID == pid {
		t.Fatalf("plugin was not restarted (pid %s)", pid)
	}
	// A finished task the platform kept is found again by its ID.
	st := waitStatus(t, finished)
	var out bytes.Buffer
	if err := finished.Logs(ctx, &out, io.Discard, false); err != nil || st.ExitCode() != 0 || out.String() != "kept\n" {
		t.Fatalf("finished task after restart: exit %d, logs %q, %v", st.ExitCode(), out.String(), err)
	}
	// A running task died with the plugin: its handle says so.
	_, err = running.Status(ctx)
	if !errors.Is(err, orchestra.ErrContainerNotFound) || !strings.Contains(err.Error(), "restarted") {
		t.Fatalf("Status of a task lost with the plugin: %v, want ErrContainerNotFound saying the plugin restarted", err)
	}
	if err := d.Close(); err != nil {
		t.Fatalf("Close after restart: %v", err)
	}
}

func TestRestartBacksOff(t *testing.T) {
	dir := privateDir(t)
	install(t, dir, "dying", 0o755)
	h, logs := newHost(t, dir)
	p, _ := h.Plugin("dying")
	for i := 0; i < 3; i++ {
		runEcho(t, h, "dying")
		var n int
		fmt.Sscan(pluginPID(t, p), &n)
		syscall.Kill(n, syscall.SIGKILL)
		for p.State() != StateExited {
			time.Sleep(5 * time.Millisecond)
		}
	}
	start := time.Now()
	runEcho(t, h, "dying")
	// The third early death waits 100ms << 2 = 400ms before the restart.
	if waited := time.Since(start); waited < 400*time.Millisecond {
		t.Fatalf("restart after 3 quick crashes took %s, want a delay of at least 400ms", waited)
	}
	if !strings.Contains(logs.String(), "crashes=3") {
		t.Fatalf("restart delay not logged:\n%s", logs)
	}
}

func waitStatus(t *testing.T, c orchestra.Container) orchestra.ContainerStatus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	st, err := testkit.WaitDone(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func TestPluginLogsReachTheHostLogger(t *testing.T) {
	dir := privateDir(t)
	install(t, dir, "chatty", 0o755)
	h, logs := newHost(t, dir)
	p, _ := h.Plugin("chatty")
	d, err := p.Open(context.Background(), "bad\x00namespace", OpenOptions{})
	if err == nil {
		d.Close()
		t.Fatal("a namespace with a NUL byte must be refused")
	}
	if !strings.Contains(err.Error(), "plugin chatty") || !strings.Contains(err.Error(), "namespace") {
		t.Fatalf("error %q should name the plugin and the bad field", err)
	}
	runEcho(t, h, "chatty")
	// The native driver logs at debug level with attributes; they arrive
	// through go-plugin's stderr parsing with their level.
	if !strings.Contains(logs.String(), "level=DEBUG") || !strings.Contains(logs.String(), "plugin=chatty") {
		t.Fatalf("plugin logs did not reach the host logger with level and attributes:\n%s", logs)
	}
}

func TestCloseStopsEveryPlugin(t *testing.T) {
	dir := privateDir(t)
	install(t, dir, "one", 0o755)
	install(t, dir, "two", 0o755)
	h, err := New(Config{Dirs: []string{dir}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	var procs []*Plugin
	for _, name := range []string{"one", "two"} {
		runEcho(t, h, name)
		p, _ := h.Plugin(name)
		procs = append(procs, p)
	}
	pids := []string{pluginPID(t, procs[0]), pluginPID(t, procs[1])}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	for _, pid := range pids {
		if _, err := os.Stat("/proc/" + pid); err == nil {
			stat, _ := os.ReadFile("/proc/" + pid + "/stat")
			if !strings.Contains(string(stat), ") Z ") {
				t.Errorf("plugin process %s still alive after host Close", pid)
			}
		}
	}
}

// helperHost is a host process for TestHostDeath: it starts a long task
// through the plugin in dir, prints the plugin's and the task's PIDs, and
// waits to be killed.
func helperHost(dir string) {
	h, err := New(Config{Dirs: []string{dir}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		panic(err)
	}
	p, err := h.Plugin("orphan")
	if err != nil {
		panic(err)
	}
	d, err := p.Open(context.Background(), "host-death", OpenOptions{})
	if err != nil {
		panic(err)
	}
	c, err := d.RunContainer(context.Background(), orchestra.Task{ID: "long", Command: []string{"sh", "-c", "echo $$; exec sleep 1000"}})
	if err != nil {
		panic(err)
	}
	var out bytes.Buffer
	for !strings.HasSuffix(out.String(), "\n") {
		out.Reset()
		if err := c.Logs(context.Background(), &out, io.Discard, false); err != nil {
			panic(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	fmt.Printf("%d %s", p.PID(), out.String())
	select {}
}

func TestHostDeathTakesPluginsAndTasksDown(t *testing.T) {
	dir := privateDir(t)
	install(t, dir, "orphan", 0o755)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	// A short directory: unix socket paths are limited to 108 bytes.
	tmp, err := os.MkdirTemp("", "hd-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(tmp) })
	cmd.Env = append(os.Environ(), "HOST_TEST_HELPER_DIR="+dir, "TMPDIR="+tmp)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var pluginPID, taskPID int
	if _, err := fmt.Fscan(stdout, &pluginPID, &taskPID); err != nil {
		cmd.Process.Kill()
		t.Fatalf("read PIDs from the helper host: %v", err)
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) && (alive(pluginPID) || alive(taskPID)) {
		time.Sleep(50 * time.Millisecond)
	}
	if alive(pluginPID) || alive(taskPID) {
		syscall.Kill(pluginPID, syscall.SIGKILL)
		syscall.Kill(taskPID, syscall.SIGKILL)
		t.Fatalf("5 s after kill -9 of the host: plugin %d alive=%v, task %d alive=%v", pluginPID, alive(pluginPID), taskPID, alive(taskPID))
	}
	left, err := native.Leaks("host-death")
	if err != nil || len(left) > 0 {
		t.Fatalf("the orphaned plugin left %v (%v)", left, err)
	}
	// The dead host's socket directory: the orphaned plugin removes it.
	if entries, _ := os.ReadDir(tmp); len(entries) > 0 {
		t.Fatalf("left in the dead host's temporary directory: %v", entries)
	}
}

// alive reports whether pid is a live (not zombie) process.
func alive(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	return err == nil && !strings.Contains(string(stat), ") Z ")
}

func TestHostilePlugins(t *testing.T) {
	tests := []struct {
		mode string
		// check exercises the plugin; the host must survive it.
		check func(t *testing.T, h *Host, p *Plugin, logs *logBuffer)
	}{
		{"hang", func(t *testing.T, h *Host, p *Plugin, logs *logBuffer) {
			d, err := p.Open(context.Background(), "hangs", OpenOptions{})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			defer cancel()
			_, err = d.RunContainer(ctx, orchestra.Task{ID: "hang", Command: []string{"true"}})
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("a hung call: %v, want context.DeadlineExceeded at the caller's deadline", err)
			}
			pid := p.PID()
			// Close hangs in the plugin: the host kills it after CloseTimeout.
			start := time.Now()
			err = h.Close()
			if err == nil || !strings.Contains(err.Error(), "killing it") {
				t.Fatalf("host Close of a hung plugin: %v, want an error saying it was killed", err)
			}
			if time.Since(start) > 20*time.Second {
				t.Fatalf("host Close took %s", time.Since(start))
			}
			deadline := time.Now().Add(5 * time.Second)
			for alive(pid) && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			if alive(pid) {
				t.Fatalf("hung plugin %d still alive after host Close", pid)
			}
		}},
		{"print", func(t *testing.T, h *Host, p *Plugin, logs *logBuffer) {
			runEcho(t, h, p.Name)
			deadline := time.Now().Add(5 * time.Second)
			for !strings.Contains(logs.String(), "driver says hello on stdout") && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			if !strings.Contains(logs.String(), "driver says hello on stdout") {
				t.Fatalf("stdout after the handshake was not logged:\n%s", logs)
			}
		}},
		{"oversize", func(t *testing.T, h *Host, p *Plugin, logs *logBuffer) {
			_, err := p.Info(context.Background())
			if err == nil || !strings.Contains(err.Error(), "larger than max") {
				t.Fatalf("an oversized message: %v, want gRPC's message size error", err)
			}
		}},
		{"protocol2", func(t *testing.T, h *Host, p *Plugin, logs *logBuffer) {
			_, err := p.Info(context.Background())
			if err == nil || !strings.Contains(err.Error(), "Plugin version: 2") || !strings.Contains(err.Error(), "this host speaks protocol 1.") {
				t.Fatalf("an unsupported protocol: %v, want an error naming both versions", err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.mode, func(t *testing.T) {
			dir := privateDir(t)
			install(t, dir, "hostile", 0o755)
			t.Setenv("FAKEPLUGIN_MODE", tt.mode)
			logs := &logBuffer{}
			h, err := New(Config{Dirs: []string{dir}, CloseTimeout: time.Second,
				Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
			if err != nil {
				t.Fatal(err)
			}
			defer h.Close()
			p, err := h.Plugin("hostile")
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, h, p, logs)
		})
	}
}

// detachingHost is the first host of TestReattach: it starts a long task
// through the plugin in dir, prints the plugin's PID, and detaches.
func detachingHost(dir, stateFile string) {
	h, err := New(Config{Dirs: []string{dir}, StateFile: stateFile, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		panic(err)
	}
	p, err := h.Plugin("keeper")
	if err != nil {
		panic(err)
	}
	d, err := p.Open(context.Background(), "kept", OpenOptions{})
	if err != nil {
		panic(err)
	}
	if _, err := d.RunContainer(context.Background(), orchestra.Task{ID: "long", Command: []string{"sleep", "600"}}); err != nil {
		panic(err)
	}
	pid := p.PID()
	if err := h.Detach(time.Minute); err != nil {
		panic(err)
	}
	fmt.Println(pid)
}

func TestReattach(t *testing.T) {
	dir := privateDir(t)
	install(t, dir, "keeper", 0o755)
	writeSums(t, dir, "keeper", "")
	stateFile := filepath.Join(t.TempDir(), "plugins.json")
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), "HOST_TEST_DETACH_DIR="+dir, "HOST_TEST_STATE="+stateFile)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("first host: %v", err)
	}
	var pid int
	if _, err := fmt.Sscan(string(out), &pid); err != nil || !alive(pid) {
		t.Fatalf("the plugin did not outlive its detached host (pid %q, %v)", out, err)
	}
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL) })

	h, logs := newHost(t, dir)
	h2, err := New(Config{Dirs: []string{dir}, StateFile: stateFile, Logger: h.logger})
	if err != nil {
		t.Fatal(err)
	}
	p, _ := h2.Plugin("keeper")
	if p.PID() != pid {
		t.Fatalf("the new host runs plugin %d, want the reattached %d\n%s", p.PID(), pid, logs)
	}
	if _, err := os.Stat(stateFile); !os.IsNotExist(err) {
		t.Fatal("the state file was not consumed")
	}
	d, err := p.Open(context.Background(), "kept", OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c, err := d.GetContainer(context.Background(), "long")
	if err != nil {
		t.Fatalf("the task started before the restart is gone: %v", err)
	}
	st, err := c.Status(context.Background())
	if err != nil || st.IsDone() {
		t.Fatalf("the task started before the restart: done=%v, %v; want it running", st != nil && st.IsDone(), err)
	}
	if err := h2.Close(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for alive(pid) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if alive(pid) {
		t.Fatalf("reattached plugin %d alive after Close", pid)
	}
	left, err := native.Leaks("kept")
	if err != nil || len(left) > 0 {
		t.Fatalf("after Close: %v (%v)", left, err)
	}
}

// TestDebugMode runs a plugin by hand, as under a debugger, and points the
// host at it: the host uses it instead of starting its own, and leaves it
// running when it closes.
func TestDebugMode(t *testing.T) {
	cmd := exec.Command(fixture)
	cmd.Env = append(os.Environ(), "POCKETCI_PLUGIN_DEBUG=1", "FAKEPLUGIN_NAME=debugged")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Kill()
		cmd.Wait()
	}()
	sc := bufio.NewScanner(stdout)
	var export string
	for sc.Scan() {
		if v, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "export "+DebugEnv+"="); ok {
			export = strings.Trim(v, "'")
			break
		}
	}
	if export == "" {
		t.Fatal("the plugin in debug mode printed no ORCHESTRA_REATTACH_PLUGINS line")
	}
	t.Setenv(DebugEnv, export)
	h, _ := newHost(t)
	runEcho(t, h, "debugged")
	p, _ := h.Plugin("debugged")
	if p.PID() != cmd.Process.Pid {
		t.Fatalf("the host runs plugin %d, want the one run by hand, %d", p.PID(), cmd.Process.Pid)
	}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	if !alive(cmd.Process.Pid) {
		t.Fatal("host Close stopped a plugin it did not start")
	}
	cmd.Process.Signal(os.Interrupt)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("a plugin in debug mode did not stop on interrupt")
	}
}

func TestLongTMPDIRKeepsSocketPathsShort(t *testing.T) {
	long := filepath.Join(t.TempDir(), strings.Repeat("d", 60))
	if err := os.MkdirAll(long, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Setenv("TMPDIR", long)
	dir := privateDir(t)
	install(t, dir, "short", 0o755)
	h, _ := newHost(t, dir)
	if len(h.socketDir) > 40 {
		t.Fatalf("socket directory %s: too long for go-plugin's sockets below it", h.socketDir)
	}
	runEcho(t, h, "short")
}

// TestLoadOverAStartedPlugin: Load puts another binary in the place of a
// plugin that already runs; Close still stops the first one's process.
func TestLoadOverAStartedPlugin(t *testing.T) {
	dir := privateDir(t)
	install(t, dir, "twice", 0o755)
	other := privateDir(t)
	path := install(t, other, "twice", 0o755)
	h, err := New(Config{Dirs: []string{dir}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	first, err := h.Plugin("twice")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := first.Info(context.Background()); err != nil {
		t.Fatal(err)
	}
	pid := first.PID()
	second, err := h.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if second == first || len(h.Plugins()) != 1 {
		t.Fatalf("Load did not replace the plugin: %d listed", len(h.Plugins()))
	}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	if alive(pid) {
		syscall.Kill(pid, syscall.SIGKILL)
		t.Fatalf("the replaced plugin %d outlived Close", pid)
	}
}

// TestFinishedStatusDoesNotRestart: the status of a finished task is final;
// after its plugin died, Status answers it from the client layer's cache,
// without starting the plugin again (one cache, in internal/wire).
func TestFinishedStatusDoesNotRestart(t *testing.T) {
	h, p, _ := hostileHost(t, "", Config{})
	defer h.Close()
	d, err := p.Open(context.Background(), "final", OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c, err := d.RunContainer(context.Background(), orchestra.Task{ID: "done", Command: []string{"sh", "-c", "exit 3"}})
	if err != nil {
		t.Fatal(err)
	}
	if st := waitStatus(t, c); st.ExitCode() != 3 {
		t.Fatalf("exit %d, want 3", st.ExitCode())
	}
	pid := p.PID()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitGone(t, pid, 5*time.Second)
	for p.State() != StateExited {
		time.Sleep(5 * time.Millisecond)
	}
	for i := 0; i < 3; i++ {
		st, err := c.Status(context.Background())
		if err != nil || !st.IsDone() || st.ExitCode() != 3 {
			t.Fatalf("Status of a finished task after its plugin died: %v, %v; want done with exit 3", st, err)
		}
	}
	if s := p.State(); s != StateExited || p.PID() != 0 {
		t.Fatalf("the plugin is %s (pid %d) after Status of a finished task: it was restarted", s, p.PID())
	}
}

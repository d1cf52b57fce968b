package host

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jtarchie/pocketci/orchestra"
)

// hostileHost installs the fixture as pocketci-driver-hostile in FAKEPLUGIN_MODE
// mode and returns a host for it with short timeouts.
func hostileHost(t *testing.T, mode string, cfg Config) (*Host, *Plugin, *logBuffer) {
	t.Helper()
	dir := privateDir(t)
	install(t, dir, "hostile", 0o755)
	t.Setenv("FAKEPLUGIN_MODE", mode)
	logs := &logBuffer{}
	cfg.Dirs = []string{dir}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	h, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	p, err := h.Plugin("hostile")
	if err != nil {
		t.Fatal(err)
	}
	return h, p, logs
}

// waitGone waits up to limit for pid to be gone (or a zombie) and says how
// long it took.
func waitGone(t *testing.T, pid int, limit time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for alive(pid) {
		if time.Since(start) > limit {
			syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("process %d still alive %s later", pid, limit)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return time.Since(start)
}

func readPID(t *testing.T, file string) int {
	t.Helper()
	var pid int
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if b, err := os.ReadFile(file); err == nil {
			if _, err := fmt.Sscan(string(b), &pid); err == nil && pid > 0 {
				return pid
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("no PID in %s", file)
	return 0
}

// stop sends SIGSTOP to pid and waits until it is stopped.
func stop(t *testing.T, pid int) {
	t.Helper()
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		stat, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if strings.Contains(string(stat), ") T ") {
			return
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatalf("process %d did not stop", pid)
}

// TestStoppedPlugin freezes a plugin with SIGSTOP in the middle of its
// work: calls end at their deadline, and Close kills it within its bounds.
func TestStoppedPlugin(t *testing.T) {
	h, p, _ := hostileHost(t, "", Config{CloseTimeout: time.Second, ShutdownTimeout: 500 * time.Millisecond})
	d, err := p.Open(context.Background(), "frozen", OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c, err := d.RunContainer(context.Background(), orchestra.Task{ID: "long", Command: []string{"sleep", "1000"}})
	if err != nil {
		t.Fatal(err)
	}
	pid := p.PID()
	stop(t, pid)
	defer syscall.Kill(pid, syscall.SIGKILL)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := c.Status(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Status on a stopped plugin: %v, want the caller's deadline", err)
	}
	t.Logf("SIGSTOP to the call's error: %s (the caller's deadline)", time.Since(start).Round(time.Millisecond))
	start = time.Now()
	err = h.Close()
	took := time.Since(start)
	if err == nil || !strings.Contains(err.Error(), "killing it") {
		t.Fatalf("Close of a stopped plugin: %v, want an error saying it was killed", err)
	}
	// CloseTimeout 1 s for its drivers, then the group is killed.
	if took > 3*time.Second {
		t.Fatalf("Close of a stopped plugin took %s", took)
	}
	t.Logf("Close of a stopped plugin: %s (CloseTimeout 1s, ShutdownTimeout 0.5s)", took.Round(time.Millisecond))
	waitGone(t, pid, 2*time.Second)
	if _, err := d.RunContainer(context.Background(), orchestra.Task{ID: "after", Command: []string{"true"}}); !errors.Is(err, orchestra.ErrClosed) {
		t.Fatalf("RunContainer after Close: %v, want orchestra.ErrClosed", err)
	}
}

// TestStoppedPluginShutdown: a plugin stopped after its drivers were closed
// cannot hold up go-plugin's shutdown call either.
func TestStoppedPluginShutdown(t *testing.T) {
	h, p, _ := hostileHost(t, "", Config{CloseTimeout: time.Second, ShutdownTimeout: 300 * time.Millisecond})
	if _, err := p.Info(context.Background()); err != nil {
		t.Fatal(err)
	}
	pid := p.PID()
	stop(t, pid)
	defer syscall.Kill(pid, syscall.SIGKILL)
	start := time.Now()
	err := h.Close()
	if err == nil || !strings.Contains(err.Error(), "did not shut down") {
		t.Fatalf("Close: %v, want an error saying the plugin was killed", err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("Close took %s with ShutdownTimeout 300ms", took)
	}
	waitGone(t, pid, 2*time.Second)
}

// TestPluginExitWhileChildHoldsPipes: the plugin exits, but a child it
// started keeps its stdout and stderr open. The host sees the exit at once,
// kills the child with the plugin's group, and restarts on next use.
func TestPluginExitWhileChildHoldsPipes(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "child.pid")
	t.Setenv("FAKEPLUGIN_PIDFILE", pidFile)
	h, p, logs := hostileHost(t, "exit", Config{})
	d, err := p.Open(context.Background(), "exits", OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pid := p.PID()
	start := time.Now()
	_, err = d.RunContainer(context.Background(), orchestra.Task{ID: "exit", Command: []string{"true"}})
	if err == nil {
		t.Fatal("RunContainer in a plugin that exits: no error")
	}
	for p.State() != StateExited {
		if time.Since(start) > 5*time.Second {
			t.Fatalf("plugin exit not seen in 5 s: state %s", p.State())
		}
		time.Sleep(time.Millisecond)
	}
	t.Logf("exit to state exited: %s", time.Since(start).Round(time.Millisecond))
	child := readPID(t, pidFile)
	waitGone(t, child, 2*time.Second)
	if alive(pid) {
		t.Fatalf("plugin %d alive", pid)
	}
	if !strings.Contains(logs.String(), "plugin exited unexpectedly") {
		t.Fatalf("the exit was not logged:\n%s", logs)
	}
	// The next call restarts it.
	start = time.Now()
	c, err := d.RunContainer(context.Background(), orchestra.Task{ID: "next", Command: []string{"echo", "hi"}})
	if err != nil {
		t.Fatalf("RunContainer after the exit: %v", err)
	}
	t.Logf("restart and RunContainer: %s", time.Since(start).Round(time.Millisecond))
	waitStatus(t, c)
	if p.PID() == pid {
		t.Fatal("not restarted")
	}
	start = time.Now()
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("Close took %s", took)
	}
}

// TestNoHandshake: a binary that never completes its handshake, while a
// child holds its stdout, is killed with the child at the start timeout,
// and a cancelled start ends at once.
func TestNoHandshake(t *testing.T) {
	for _, tt := range []struct {
		name   string
		cancel bool // false: the start timeout ends it
		want   string
	}{
		{"start timeout", false, "timeout while waiting for plugin to start"},
		{"cancelled", true, "context canceled"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			pidFile := filepath.Join(t.TempDir(), "child.pid")
			t.Setenv("FAKEPLUGIN_PIDFILE", pidFile)
			_, p, _ := hostileHost(t, "nohandshake", Config{StartTimeout: time.Second})
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			start := time.Now()
			limit := time.Second + 2*time.Second
			cancelled := make(chan time.Time, 1)
			if tt.cancel {
				// Cancelled once the plugin is mid-start, its child holding
				// its pipes (a loaded machine may take longer than any fixed
				// delay to get there).
				go func() {
					for {
						if b, err := os.ReadFile(pidFile); err == nil && strings.HasSuffix(string(b), "\n") {
							break
						}
						if ctx.Err() != nil {
							return
						}
						time.Sleep(time.Millisecond)
					}
					cancelled <- time.Now()
					cancel()
				}()
				limit = 500 * time.Millisecond
			}
			_, err := p.Info(ctx)
			end := time.Now()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Info: %v, want %q", err, tt.want)
			}
			if tt.cancel {
				start = <-cancelled
			}
			if took := end.Sub(start); took > limit {
				t.Fatalf("start ended %s after it began (or was cancelled), want within %s", took, limit)
			}
			t.Logf("start ended %s after it began (or was cancelled)", end.Sub(start).Round(time.Millisecond))
			waitGone(t, readPID(t, pidFile), 2*time.Second)
		})
	}
}

// TestStderrFlood: 400 MB of stderr without a newline does not grow the host.
func TestStderrFlood(t *testing.T) {
	size := 400 << 20
	if testing.Short() {
		size = 40 << 20
	}
	t.Setenv("FAKEPLUGIN_FLOOD", fmt.Sprint(size))
	_, p, _ := hostileHost(t, "flood", Config{Logger: slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelInfo})),
		StartTimeout: 2 * time.Minute})
	before := rss(t)
	peak := before
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
				peak = max(peak, rss(t))
			}
		}
	}()
	_, err := p.Info(context.Background())
	close(stop)
	<-sampled
	if err != nil {
		t.Fatal(err)
	}
	growth := (peak - before) >> 20
	t.Logf("host RSS %d MiB before, peak %d MiB while the plugin wrote %d MiB of stderr", before>>20, peak>>20, size>>20)
	if growth > 64 {
		t.Fatalf("host grew %d MiB reading %d MiB of stderr", growth, size>>20)
	}
	lines := p.stderr.Lines()
	if len(lines) == 0 || len(lines[0]) > maxStderrLine+len(truncMarker) || !strings.HasSuffix(lines[0], truncMarker) {
		t.Fatalf("stderr tail: %d lines, first %d bytes; want one line cut at %d bytes with a marker", len(lines), len(lines[0]), maxStderrLine)
	}
}

// rss is this process's resident set size in bytes.
func rss(t *testing.T) int {
	t.Helper()
	runtime.GC()
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		t.Fatal(err)
	}
	var size, res int
	fmt.Sscan(string(b), &size, &res)
	return res * os.Getpagesize()
}

func TestTailIsBounded(t *testing.T) {
	tests := []struct {
		name  string
		write []string
		want  []string
	}{
		{"lines", []string{"a\nb\n", "c"}, []string{"a", "b", "c"}},
		{"ring keeps the last", []string{"1\n2\n3\n4\n5\n"}, []string{"3", "4", "5"}},
		{"split writes", []string{"ab", "c\nd", "e\n"}, []string{"abc", "de"}},
		{"long line cut", []string{strings.Repeat("x", maxStderrLine+10) + "\nok\n"}, []string{strings.Repeat("x", maxStderrLine) + truncMarker, "ok"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tl := newTail(3)
			for _, w := range tt.write {
				tl.Write([]byte(w))
			}
			if got := tl.Lines(); fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Fatalf("Lines = %q, want %q", got, tt.want)
			}
		})
	}
}

// orphanHost is a host process for TestKilledHostStoppedPlugin: it starts
// the plugin in dir, prints its PID and waits to be killed.
func orphanHost(dir string) {
	h, err := New(Config{Dirs: []string{dir}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		panic(err)
	}
	p, err := h.Plugin("frozen")
	if err != nil {
		panic(err)
	}
	d, err := p.Open(context.Background(), "orphaned", OpenOptions{})
	if err != nil {
		panic(err)
	}
	c, err := d.RunContainer(context.Background(), orchestra.Task{ID: "long", Command: []string{"sh", "-c", "echo $$; exec sleep 1000"}})
	if err != nil {
		panic(err)
	}
	var out strings.Builder
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

// TestKilledHostStoppedPlugin: a plugin stopped with SIGSTOP cannot notice
// its host's death, nor can one that ignores it. After SIGKILL of the host,
// neither stays: the kernel hangs up the stopped one (its process group is
// orphaned), and the reaper kills the deaf one after orphanGrace.
func TestKilledHostStoppedPlugin(t *testing.T) {
	for _, tt := range []struct {
		name, mode string
		stop       bool
	}{
		{"stopped", "", true},
		{"stopped and deaf", "deaf", true},
		{"deaf", "deaf", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := privateDir(t)
			install(t, dir, "frozen", 0o755)
			exe, err := os.Executable()
			if err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(exe, "-test.run=^$")
			// A short directory: unix socket paths are limited to 108 bytes.
			tmp, err := os.MkdirTemp("", "ko-")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.RemoveAll(tmp) })
			cmd.Env = append(os.Environ(), "HOST_TEST_ORPHAN_DIR="+dir, "FAKEPLUGIN_MODE="+tt.mode, "TMPDIR="+tmp)
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			var pid, task int
			if _, err := fmt.Fscan(stdout, &pid, &task); err != nil {
				cmd.Process.Kill()
				cmd.Wait()
				t.Fatalf("read the plugin's and the task's PIDs: %v", err)
			}
			if tt.stop {
				stop(t, pid)
			}
			cmd.Process.Kill()
			cmd.Wait()
			took := waitGone(t, pid, orphanGrace+3*time.Second)
			t.Logf("plugin gone %s after SIGKILL of its host (reaper grace %s)", took.Round(time.Millisecond), orphanGrace)
			// The native task dies with its plugin.
			waitGone(t, task, 3*time.Second)
			// The dead host's socket directory goes too (the reaper removes
			// it after the plugin).
			deadline := time.Now().Add(orphanGrace + 3*time.Second)
			for {
				entries, _ := os.ReadDir(tmp)
				if len(entries) == 0 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("left in the dead host's temporary directory: %v", entries)
				}
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
}

func TestInfoStringsAreBounded(t *testing.T) {
	_, p, logs := hostileHost(t, "escapes", Config{})
	info, err := p.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(info.SDKVersion) > maxInfoString+len(truncMarker) || !strings.HasSuffix(info.SDKVersion, truncMarker) {
		t.Fatalf("SDK version of %d bytes kept, want it cut at %d", len(info.SDKVersion), maxInfoString)
	}
	if !strings.Contains(logs.String(), "too long") {
		t.Fatalf("truncation not logged:\n%s", logs)
	}
}

func TestMisnamedDriverUsesServedName(t *testing.T) {
	_, p, logs := hostileHost(t, "misnamed", Config{})
	d, err := p.Open(context.Background(), "misnamed", OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if d.Name() != "hostile" {
		t.Fatalf("Name() = %q, want the served name %q", d.Name(), "hostile")
	}
	if !strings.Contains(logs.String(), "driver_name=somethingelse") {
		t.Fatalf("the disagreement was not logged:\n%s", logs)
	}
}

// TestClosedHost: every call after Close returns orchestra.ErrClosed.
func TestClosedHost(t *testing.T) {
	h, p, _ := hostileHost(t, "", Config{})
	d, err := p.Open(context.Background(), "closed", OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c, err := d.RunContainer(context.Background(), orchestra.Task{ID: "t", Command: []string{"echo", "hi"}})
	if err != nil {
		t.Fatal(err)
	}
	waitStatus(t, c)
	v, err := d.CreateVolume(context.Background(), "v", 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	calls := map[string]func() error{
		"Info": func() error { _, err := p.Info(ctx); return err },
		"Open": func() error { _, err := p.Open(context.Background(), "other", OpenOptions{}); return err },
		"RunContainer": func() error {
			_, err := d.RunContainer(ctx, orchestra.Task{ID: "u", Command: []string{"true"}})
			return err
		},
		"CreateVolume": func() error { _, err := d.CreateVolume(ctx, "w", 0); return err },
		"Status":       func() error { _, err := c.Status(ctx); return err },
		"Logs":         func() error { return c.Logs(ctx, io.Discard, io.Discard, false) },
		"Cleanup":      func() error { return c.Cleanup(ctx) },
		"Volume":       func() error { return v.Cleanup(ctx) },
		"GetContainer": func() error { _, err := d.GetContainer(ctx, "t"); return err },
	}
	for name, call := range calls {
		if err := call(); !errors.Is(err, orchestra.ErrClosed) {
			t.Errorf("%s after Close: %v, want orchestra.ErrClosed", name, err)
		}
	}
}

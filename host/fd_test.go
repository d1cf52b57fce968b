package host

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jtarchie/pocketci/orchestra"
)

// TestTaskInheritsNoPluginFD: a pinned plugin runs as /proc/self/fd/3, the
// open file of its binary; pluginsdk marks that fd close-on-exec, so no
// process the plugin starts inherits it, and a native task, pinned or not,
// holds only stdin, stdout and stderr. The task's fds are read from outside
// it, once it has exec'd a program that opens none.
func TestTaskInheritsNoPluginFD(t *testing.T) {
	counts := map[bool]int{}
	for _, pinned := range []bool{true, false} {
		name := "fdunpinned"
		if pinned {
			name = "fdpinned"
		}
		t.Run(name, func(t *testing.T) {
			dir := privateDir(t)
			install(t, dir, name, 0o755)
			if pinned {
				writeSums(t, dir, name, "")
			}
			h, err := New(Config{Dirs: []string{dir}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
			if err != nil {
				t.Fatal(err)
			}
			defer h.Close()
			p, err := h.Plugin(name)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			d, err := p.Open(ctx, "fds", OpenOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			if pinned {
				// The pin is in force: the plugin runs its open file.
				proc := "/proc/" + strconv.Itoa(p.PID())
				env, err := os.ReadFile(proc + "/environ")
				if err != nil || !strings.Contains(string(env), ExeFDEnv+"=3") {
					t.Fatalf("the pinned plugin was not run from its open fd 3 (environ has %s: %v, %v)", ExeFDEnv, strings.Contains(string(env), ExeFDEnv), err)
				}
				// Every process the plugin starts without passing the fd on
				// on purpose goes without it: the native driver's shim puts
				// fds of its own at 3 and up, which would hide the leak
				// from its tasks, a driver that runs a program directly
				// (qemu) would not.
				if !closeOnExec(t, proc, 3) {
					t.Fatalf("the pinned plugin's fd 3 (its binary) is not close-on-exec: every process it starts inherits it")
				}
			}
			c, err := d.RunContainer(ctx, orchestra.Task{ID: "fds", Command: []string{"sh", "-c", "echo $$; exec sleep 30"}})
			if err != nil {
				t.Fatal(err)
			}
			fds := taskFDs(ctx, t, c)
			t.Logf("the task's fds: %v", fds)
			for fd, target := range fds {
				if strings.Contains(target, Prefix) {
					t.Errorf("the task holds fd %s on the plugin's binary %s", fd, target)
				}
			}
			for fd := range fds {
				if fd != "0" && fd != "1" && fd != "2" {
					t.Errorf("the task holds fd %s (%s): a task sees only 0, 1 and 2", fd, fds[fd])
				}
			}
			counts[pinned] = len(fds)
			if err := c.Cleanup(ctx); err != nil {
				t.Fatal(err)
			}
		})
	}
	// The native driver's own shim may pass fds of its own to its tasks, and
	// the test's environment may hold inherited ones: the pin must add none.
	if !t.Failed() && counts[true] != counts[false] {
		t.Fatalf("a task of the pinned plugin holds %d fds, one of the unpinned plugin %d", counts[true], counts[false])
	}
}

// taskFDs reads the fds of the task c, which prints its PID and then execs
// a program that opens none, from outside the task: the listing opens no fd
// in the task itself.
func taskFDs(ctx context.Context, t *testing.T, c orchestra.Container) map[string]string {
	t.Helper()
	var pid int
	for pid == 0 {
		var out bytes.Buffer
		if err := c.Logs(ctx, &out, io.Discard, false); err != nil {
			t.Fatal(err)
		}
		if line, ok := strings.CutSuffix(out.String(), "\n"); ok {
			n, err := strconv.Atoi(line)
			if err != nil {
				t.Fatalf("task printed %q, want its PID", out.String())
			}
			pid = n
		}
		if ctx.Err() != nil {
			t.Fatal(ctx.Err())
		}
		time.Sleep(10 * time.Millisecond)
	}
	dir := "/proc/" + strconv.Itoa(pid) + "/fd"
	// Once sh has exec'd sleep, the fds are sleep's.
	for {
		exe, _ := os.Readlink("/proc/" + strconv.Itoa(pid) + "/exe")
		if strings.HasSuffix(exe, "sleep") || strings.HasSuffix(exe, "busybox") || strings.HasSuffix(exe, "coreutils") {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("task %d did not exec sleep: exe %s", pid, exe)
		}
		time.Sleep(5 * time.Millisecond)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	fds := map[string]string{}
	for _, e := range entries {
		target, _ := os.Readlink(dir + "/" + e.Name())
		fds[e.Name()] = target
	}
	return fds
}

// closeOnExec reports whether fd of the process at proc is marked
// close-on-exec (O_CLOEXEC in /proc/PID/fdinfo's octal flags).
func closeOnExec(t *testing.T, proc string, fd int) bool {
	t.Helper()
	info, err := os.ReadFile(proc + "/fdinfo/" + strconv.Itoa(fd))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(info), "\n") {
		if v, ok := strings.CutPrefix(line, "flags:"); ok {
			flags, err := strconv.ParseUint(strings.TrimSpace(v), 8, 64)
			if err != nil {
				t.Fatalf("fdinfo flags %q: %v", v, err)
			}
			return flags&syscall.O_CLOEXEC != 0
		}
	}
	t.Fatalf("no flags in %s/fdinfo/%d", proc, fd)
	return false
}

//go:build linux

package native

import (
	"bytes"
	"errors"
	"fmt"
	"github.com/jtarchie/pocketci/orchestra/conformance/testkit"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"testing/iotest"
	"time"

	"github.com/jtarchie/pocketci/orchestra"
)

// pidsOf reads the pids a task wrote, one per line, to file in dir.
func pidsOf(t *testing.T, path string) []int {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		b, _ := os.ReadFile(path)
		if fields := strings.Fields(string(b)); len(fields) >= 2 {
			var pids []int
			for _, f := range fields {
				pid, err := strconv.Atoi(f)
				if err != nil {
					t.Fatalf("pid file %s: %q", path, b)
				}
				pids = append(pids, pid)
			}
			return pids
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("the task did not write its pids to %s", path)
	return nil
}

// TestDescendantsDieWithTask starts children that leave the task's process
// group and session (setsid, set -m) and change directory: they die when
// the task ends, by exit, by Cleanup or by Close.
func TestDescendantsDieWithTask(t *testing.T) {
	escape := "cd /; setsid sleep 1000 & echo $! >> %[1]s; (set -m; sleep 1000 & echo $! >> %[1]s; wait) & "
	tests := []struct {
		name string
		tail string // after the escapees started
		end  func(t *testing.T, d orchestra.Driver, c orchestra.Container)
	}{
		{"main exits", "sleep 1.5; exit 0", func(t *testing.T, _ orchestra.Driver, c orchestra.Container) {
			testkit.MustWaitDone(t, c, 30*time.Second)
		}},
		{"cleanup", "sleep 1000", func(t *testing.T, _ orchestra.Driver, c orchestra.Container) {
			if err := c.Cleanup(t.Context()); err != nil {
				t.Fatal(err)
			}
		}},
		{"close", "sleep 1000", func(t *testing.T, d orchestra.Driver, _ orchestra.Container) {
			if err := d.Close(); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			useRoot(t)
			d := newDriver(t, "descendants")
			pidFile := filepath.Join(t.TempDir(), "pids")
			c, err := d.RunContainer(t.Context(), orchestra.Task{ID: "tree", Command: []string{"sh", "-c", fmt.Sprintf(escape, pidFile) + tt.tail}})
			if err != nil {
				t.Fatal(err)
			}
			pids := pidsOf(t, pidFile)
			for _, pid := range pids {
				if !alive(pid) {
					t.Fatalf("escapee %d is not running; the test proves nothing", pid)
				}
			}
			tt.end(t, d, c)
			deadline := time.Now().Add(5 * time.Second)
			for _, pid := range pids {
				for alive(pid) && time.Now().Before(deadline) {
					time.Sleep(20 * time.Millisecond)
				}
				if alive(pid) {
					_ = syscall.Kill(pid, syscall.SIGKILL)
					t.Fatalf("descendant %d outlived the task (%s)", pid, tt.name)
				}
			}
		})
	}
}

// TestFullDiskFailsTheTask gives native a 1 MiB tmpfs as its root: a task
// that writes more than fits ends with a non-zero exit code, and Logs
// returns what was kept and an error saying that output was lost and why.
func TestFullDiskFailsTheTask(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("ORCHESTRA_REQUIRE_ROOT") == "1" {
			t.Fatal("ORCHESTRA_REQUIRE_ROOT=1 but mounting a tmpfs needs root")
		}
		t.Skip("mounting a small tmpfs needs root (set ORCHESTRA_REQUIRE_ROOT=1 to fail instead)")
	}
	root := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", root).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", "-l", root).Run() })
	t.Setenv(RootEnv, root)
	d := newDriver(t, "full")
	tests := []struct {
		id, command string
	}{
		{"big-then-exit-0", "head -c 3000000 /dev/zero; exit 0"},
		{"stderr-then-exit-0", "head -c 3000000 /dev/zero >&2; echo done"},
	}
	for _, tt := range tests {
		t.Run(tt.id, func(t *testing.T) {
			c, err := d.RunContainer(t.Context(), orchestra.Task{ID: tt.id, Command: []string{"sh", "-c", tt.command}})
			if err != nil {
				t.Fatal(err)
			}
			st := testkit.MustWaitDone(t, c, 30*time.Second)
			if st.ExitCode() == 0 {
				t.Fatal("a task whose output did not fit on the disk reported exit code 0")
			}
			var out, errb bytes.Buffer
			err = c.Logs(t.Context(), &out, &errb, false)
			if err == nil || !strings.Contains(err.Error(), "output lost") || !strings.Contains(err.Error(), "no space left on device") {
				t.Fatalf("Logs: expected an error saying output was lost for lack of space, got %v", err)
			}
			t.Logf("exit %d, kept %d+%d bytes, Logs: %v", st.ExitCode(), out.Len(), errb.Len(), err)
			if err := c.Cleanup(t.Context()); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestStdinFailureFailsTheTask: when the caller's stdin reader fails, the
// task never sees a clean end of input: it is killed, exits non-zero, and
// Logs names stdin and the reader's error.
func TestStdinFailureFailsTheTask(t *testing.T) {
	useRoot(t)
	d := newDriver(t, "stdin-fail")
	c, err := d.RunContainer(t.Context(), orchestra.Task{
		ID:      "cat",
		Command: []string{"sh", "-c", "cat; echo cat-saw-eof"},
		Stdin:   io.MultiReader(strings.NewReader("partial"), iotest.ErrReader(errors.New("connection reset by caller"))),
	})
	if err != nil {
		t.Fatal(err)
	}
	st := testkit.MustWaitDone(t, c, 30*time.Second)
	var out bytes.Buffer
	err = c.Logs(t.Context(), &out, io.Discard, false)
	if st.ExitCode() == 0 || strings.Contains(out.String(), "cat-saw-eof") {
		t.Fatalf("the task took a failed stdin for its end: exit %d, stdout %q", st.ExitCode(), out.String())
	}
	if err == nil || !strings.Contains(err.Error(), "stdin") || !strings.Contains(err.Error(), "connection reset by caller") {
		t.Fatalf("Logs: expected an error naming stdin and the reader's error, got %v", err)
	}
}

// TestSecondInstanceAttaches: a second driver instance of the namespace
// (as a second host would open) that runs the same task ID while the first
// runs it attaches to it: it never runs the command again, never deletes
// the first one's files, sees it finish, and its Cleanup stops it.
func TestSecondInstanceAttaches(t *testing.T) {
	useRoot(t)
	first := newDriver(t, "two-hosts")
	second := newDriver(t, "two-hosts")
	fifo := filepath.Join(t.TempDir(), "go")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	task := orchestra.Task{ID: "shared id", Command: []string{"sh", "-c", "echo x >> ./data/count; echo started; cat " + fifo + "; exit 5"},
		Mounts: orchestra.Mounts{{Name: "data", Path: "data"}}}
	c1, err := first.RunContainer(t.Context(), task)
	if err != nil {
		t.Fatal(err)
	}
	for out, _ := logsOf(t, c1); out != "started\n"; out, _ = logsOf(t, c1) {
		time.Sleep(10 * time.Millisecond)
	}
	c2, err := second.RunContainer(t.Context(), task)
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := c2.Status(t.Context()); st.IsDone() {
		t.Fatal("the second instance sees the running task as done")
	}
	if out, _ := logsOf(t, c2); out != "started\n" {
		t.Fatalf("the second instance's logs: expected %q, got %q", "started\n", out)
	}
	found, err := second.GetContainer(t.Context(), task.ID)
	if err != nil || found != c2 {
		t.Fatalf("GetContainer on the second instance: got %v, %v", found, err)
	}
	if err := os.WriteFile(fifo, []byte("go\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if st1, st2 := testkit.MustWaitDone(t, c1, 30*time.Second), testkit.MustWaitDone(t, c2, 30*time.Second); st1.ExitCode() != 5 || st2.ExitCode() != 5 {
		t.Fatalf("exit codes: expected 5 on both instances, got %d and %d", st1.ExitCode(), st2.ExitCode())
	}
	rd, err := second.RunContainer(t.Context(), orchestra.Task{ID: "read", Command: []string{"cat", "data/count"}, Mounts: task.Mounts})
	if err != nil {
		t.Fatal(err)
	}
	testkit.MustWaitDone(t, rd, 30*time.Second)
	if out, _ := logsOf(t, rd); out != "x\n" {
		t.Fatalf("the command ran %q times, expected once", out)
	}

	// A running task is stopped by the other instance's Cleanup.
	long := orchestra.Task{ID: "long", Command: []string{"sleep", "1000"}}
	l1, err := first.RunContainer(t.Context(), long)
	if err != nil {
		t.Fatal(err)
	}
	l2, err := second.RunContainer(t.Context(), long)
	if err != nil {
		t.Fatal(err)
	}
	if err := l2.Cleanup(t.Context()); err != nil {
		t.Fatal(err)
	}
	if st := testkit.MustWaitDone(t, l1, 30*time.Second); st.ExitCode() != 137 {
		t.Fatalf("after the second instance's Cleanup: expected the task killed (137), got %d", st.ExitCode())
	}
}

// TestMounts: relative and absolute paths reach the volume at
// ./<path>; two mounts at one place are refused, naming both.
func TestMounts(t *testing.T) {
	useRoot(t)
	d := newDriver(t, "mounts")
	w, err := d.RunContainer(t.Context(), orchestra.Task{ID: "w", Command: []string{"sh", "-c", "echo hi > ./rel/dir/f && echo yo > ./abs/f"},
		Mounts: orchestra.Mounts{{Name: "v1", Path: "rel/dir"}, {Name: "v2", Path: "/abs"}}})
	if err != nil {
		t.Fatal(err)
	}
	if code := testkit.MustWaitDone(t, w, 30*time.Second).ExitCode(); code != 0 {
		_, e := logsOf(t, w)
		t.Fatalf("writer exit %d: %s", code, e)
	}
	r, err := d.RunContainer(t.Context(), orchestra.Task{ID: "r", Command: []string{"cat", "/x/f", "y/f"},
		Mounts: orchestra.Mounts{{Name: "v1", Path: "/x"}, {Name: "v2", Path: "y"}}})
	if err != nil {
		t.Fatal(err)
	}
	// The command has an absolute path argument: native does not
	// remap it, so read through the working directory instead.
	testkit.MustWaitDone(t, r, 30*time.Second)
	r2, err := d.RunContainer(t.Context(), orchestra.Task{ID: "r2", Command: []string{"cat", "x/f", "y/f"},
		Mounts: orchestra.Mounts{{Name: "v1", Path: "/x"}, {Name: "v2", Path: "y"}}})
	if err != nil {
		t.Fatal(err)
	}
	testkit.MustWaitDone(t, r2, 30*time.Second)
	if out, _ := logsOf(t, r2); out != "hi\nyo\n" {
		t.Fatalf("reader: expected %q, got %q", "hi\nyo\n", out)
	}
	_, err = d.RunContainer(t.Context(), orchestra.Task{ID: "same", Command: []string{"true"},
		Mounts: orchestra.Mounts{{Name: "a", Path: "/a"}, {Name: "b", Path: "a"}}})
	if !errors.Is(err, orchestra.ErrInvalidTask) || !strings.Contains(err.Error(), "Mounts[0]") || !strings.Contains(err.Error(), "Mounts[1]") {
		t.Fatalf("two mounts at one place: expected ErrInvalidTask naming both mounts, got %v", err)
	}
}

// TestNestedMounts: a mount inside another one, at any depth and given in
// any order, gets the files written under it; the enclosing volume gets
// only an empty directory as its mount point. WorkDir inside the inner
// mount is the inner volume's.
func TestNestedMounts(t *testing.T) {
	useRoot(t)
	d := newDriver(t, "nested")
	w, err := d.RunContainer(t.Context(), orchestra.Task{ID: "w", WorkDir: "/a/b/c/sub",
		Command: []string{"sh", "-c", "echo c > f && echo b > ../../b.txt && echo a > ../../../a.txt && pwd"},
		Mounts:  orchestra.Mounts{{Name: "c", Path: "/a/b/c"}, {Name: "a", Path: "a"}, {Name: "b", Path: "/a/b"}}})
	if err != nil {
		t.Fatal(err)
	}
	st := testkit.MustWaitDone(t, w, 30*time.Second)
	out, errOut := logsOf(t, w)
	if st.ExitCode() != 0 || !strings.HasSuffix(out, "/work/a/b/c/sub\n") {
		t.Fatalf("writer: exit %d, stdout %q, stderr %q; want 0 and the logical working directory", st.ExitCode(), out, errOut)
	}
	vols := filepath.Join(Root(), "nested", "volumes")
	for _, f := range []struct{ path, want string }{
		{"a/a.txt", "a\n"}, {"b/b.txt", "b\n"}, {"c/sub/f", "c\n"},
	} {
		if b, err := os.ReadFile(filepath.Join(vols, f.path)); err != nil || string(b) != f.want {
			t.Errorf("volume file %s: %q, %v; want %q", f.path, b, err, f.want)
		}
	}
	if os.Geteuid() != 0 { // the shim's user namespace: the task keeps no capability
		c, err := d.RunContainer(t.Context(), orchestra.Task{ID: "caps", Command: []string{"grep", "^CapEff", "/proc/self/status"},
			Mounts: orchestra.Mounts{{Name: "a", Path: "a"}, {Name: "b", Path: "a/b"}}})
		if err != nil {
			t.Fatal(err)
		}
		testkit.MustWaitDone(t, c, 30*time.Second)
		if out, _ := logsOf(t, c); !strings.HasSuffix(out, "\t0000000000000000\n") {
			t.Errorf("the task of a non-root driver with nested mounts has capabilities: %q", out)
		}
	}
	for _, mountPoint := range []string{"a/b", "b/c"} {
		if entries, err := os.ReadDir(filepath.Join(vols, mountPoint)); err != nil || len(entries) != 0 {
			t.Errorf("mount point %s in the enclosing volume: %v, %v; want an empty directory", mountPoint, entries, err)
		}
	}
}

// TestFailedStartLeavesNothing: a task that cannot start (its user does
// not exist) leaves no directory behind, and its ID is not "found".
func TestFailedStartLeavesNothing(t *testing.T) {
	useRoot(t)
	d := newDriver(t, "failed-start")
	_, err := d.RunContainer(t.Context(), orchestra.Task{ID: "missing", Command: []string{"true"}, User: "no-such-user-here"})
	if !errors.Is(err, orchestra.ErrInvalidTask) {
		t.Fatalf("expected ErrInvalidTask, got %v", err)
	}
	if entries, _ := os.ReadDir(filepath.Join(Root(), "failed-start", "tasks")); len(entries) != 0 {
		t.Fatalf("a task that did not start left %v", entries)
	}
	if _, err := d.GetContainer(t.Context(), "missing"); !errors.Is(err, orchestra.ErrContainerNotFound) {
		t.Fatalf("GetContainer of a task that never started: expected ErrContainerNotFound, got %v", err)
	}
}

// TestLookupsCreateNothing: GetContainer of unknown IDs from another
// instance, while this one closes, creates no file or directory, so Close
// removes the namespace cleanly.
func TestLookupsCreateNothing(t *testing.T) {
	useRoot(t)
	a, err := open("lookups", testkit.Logger(t, slog.LevelWarn))
	if err != nil {
		t.Fatal(err)
	}
	b := newDriver(t, "lookups")
	for i := range 5 {
		c, err := a.RunContainer(t.Context(), orchestra.Task{ID: fmt.Sprint("t", i), Command: []string{"true"}})
		if err != nil {
			t.Fatal(err)
		}
		testkit.MustWaitDone(t, c, 30*time.Second)
	}
	stop := make(chan struct{})
	looked := make(chan int)
	go func() {
		n := 0
		for {
			select {
			case <-stop:
				looked <- n
				return
			default:
			}
			_, _ = b.GetContainer(t.Context(), fmt.Sprint("unknown-", n))
			n++
		}
	}()
	err = a.Close()
	close(stop)
	n := <-looked
	if err != nil {
		t.Fatalf("Close while another instance looks tasks up (%d lookups): %v", n, err)
	}
	if _, err := os.Stat(filepath.Join(Root(), "lookups")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("after Close and %d lookups, the namespace directory: %v", n, err)
	}
}

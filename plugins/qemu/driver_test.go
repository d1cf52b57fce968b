package qemu

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jtarchie/pocketci/orchestra"
	"github.com/jtarchie/pocketci/orchestra/conformance/testkit"
)

func TestValidate(t *testing.T) {
	ok := orchestra.Task{ID: "x", Command: []string{"echo"}}
	tests := []struct {
		name   string
		mutate func(*orchestra.Task)
		valid  bool
	}{
		{"ok", func(*orchestra.Task) {}, true},
		{"no id", func(t *orchestra.Task) { t.ID = "" }, false},
		{"no command", func(t *orchestra.Task) { t.Command = nil }, false},
		{"command with =", func(t *orchestra.Task) { t.Command = []string{"A=b"} }, true},
		{"env name with =", func(t *orchestra.Task) { t.Env = map[string]string{"A=B": "c"} }, false},
		{"mount at root", func(t *orchestra.Task) { t.Mounts = orchestra.Mounts{{Name: "v", Path: "/"}} }, false},
		{"mount without name", func(t *orchestra.Task) { t.Mounts = orchestra.Mounts{{Path: "/x"}} }, false},
		{"nested mount", func(t *orchestra.Task) { t.Mounts = orchestra.Mounts{{Name: "v", Path: "/a/b"}} }, true},
		{"user like an option", func(t *orchestra.Task) { t.User = "-x" }, true},
		{"user with space", func(t *orchestra.Task) { t.User = "a b" }, false},
		{"id with leading dash and spaces", func(t *orchestra.Task) { t.ID = "-a b" }, true},
		{"relative mount", func(t *orchestra.Task) { t.Mounts = orchestra.Mounts{{Name: "v", Path: "cache"}} }, true},
		{"mount with ..", func(t *orchestra.Task) { t.Mounts = orchestra.Mounts{{Name: "v", Path: "a/../b"}} }, false},
		{"numeric user", func(t *orchestra.Task) { t.User = "1000:1000" }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			task := ok
			tt.mutate(&task)
			err := validate(task)
			if tt.valid && err != nil {
				t.Errorf("validate: %v, want nil", err)
			}
			if !tt.valid && !errors.Is(err, orchestra.ErrInvalidTask) {
				t.Errorf("validate: %v, want ErrInvalidTask", err)
			}
		})
	}
	for in, want := range map[string]string{"/x/./y": "x/y", "x/y/": "x/y", "cache": "cache"} {
		if got := mountRel(in); got != want {
			t.Errorf("mountRel(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestFailedBootIsRetried: a boot that fails gives an error with qemu's and
// the console's last lines, and the next call (with a good image) works.
func TestFailedBootIsRetried(t *testing.T) {
	requireQEMU(t)
	goodKernel, _ := ImagePaths()
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	d, _ := newTestDriver(t)

	t.Setenv(EnvKernel, filepath.Join(t.TempDir(), "no-such-vmlinux"))
	_, err := d.RunContainer(ctx, orchestra.Task{ID: "a", Command: []string{"true"}})
	if err == nil || !strings.Contains(err.Error(), "no-such-vmlinux") || !strings.Contains(err.Error(), "build.sh") {
		t.Fatalf("missing kernel: err = %v, want it to name the file and build.sh", err)
	}

	garbage := filepath.Join(t.TempDir(), "garbage-vmlinux")
	if err := os.WriteFile(garbage, bytes.Repeat([]byte("not a kernel "), 1000), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv(EnvKernel, garbage)
	_, err = d.ensureVM(ctx)
	if err == nil || !strings.Contains(err.Error(), "qemu output") {
		t.Fatalf("bad kernel: err = %v, want a boot error with qemu's output", err)
	}
	t.Logf("bad kernel error: %v", err)

	t.Setenv(EnvKernel, goodKernel)
	code, out, _ := runTask(t, ctx, d, orchestra.Task{ID: "b", Command: []string{"echo", "booted"}})
	if code != 0 || out != "booted\n" {
		t.Fatalf("after a fixed kernel: exit %d stdout %q, want 0 and booted", code, out)
	}
}

// TestConcurrentFirstCallsShareOneBoot: many first calls at once boot one VM.
func TestConcurrentFirstCallsShareOneBoot(t *testing.T) {
	requireQEMU(t)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	d, ns := newTestDriver(t)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := range 8 {
		wg.Go(func() {
			var err error
			if i%2 == 0 {
				_, err = d.CreateVolume(ctx, "v"+strconv.Itoa(i), 0)
			} else {
				var c orchestra.Container
				c, err = d.RunContainer(ctx, orchestra.Task{ID: strconv.Itoa(i), Command: []string{"true"}})
				if err == nil {
					testkit.MustWaitDone(t, c, taskTimeout)
				}
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	left, err := Leaks(ns)
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 3 { // one qemu process, one private directory, the namespace's directory
		t.Fatalf("while running: %v, want exactly one qemu process, one private directory and the namespace's directory", left)
	}
}

// TestVM runs the heavier behaviours on one VM, to keep the boot count low.
func TestVM(t *testing.T) {
	requireQEMU(t)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	d, ns := newTestDriver(t)

	t.Run("POSIX /dev and a writable /tmp", func(t *testing.T) {
		code, out, errs := runTask(t, ctx, d, orchestra.Task{ID: "dev-stdin", Command: []string{"sh", "-c", "cat < /dev/stdin"}, Stdin: strings.NewReader("hi")})
		if code != 0 || out != "hi" {
			t.Fatalf("cat < /dev/stdin: exit %d stdout %q stderr %q, want hi", code, out, errs)
		}
		script := `set -e
echo out >/dev/stdout
echo err >/dev/stderr
ls /dev/fd/0 /dev/fd/1 /dev/fd/2 >/dev/null
grep -q ' /dev/pts devpts ' /proc/mounts
grep -q ' /dev/shm tmpfs ' /proc/mounts
echo shm >/dev/shm/pocketci-test && rm /dev/shm/pocketci-test
echo tmp >/tmp/pocketci-test && rm /tmp/pocketci-test
[ -c /dev/null ] && [ -c /dev/zero ] && [ -c /dev/urandom ] && [ -c /dev/tty ] && [ -c /dev/ptmx ]
echo fine`
		code, out, errs = runTask(t, ctx, d, orchestra.Task{ID: "dev-posix", Command: []string{"sh", "-c", script}})
		if code != 0 || out != "out\nfine\n" || errs != "err\n" {
			t.Fatalf("exit %d stdout %q stderr %q", code, out, errs)
		}
		// A non-root user can write /tmp and /dev/shm too.
		code, _, errs = runTask(t, ctx, d, orchestra.Task{ID: "dev-nobody", User: "nobody", Command: []string{"sh", "-c", "echo x >/tmp/n && echo y >/dev/shm/n && rm /tmp/n /dev/shm/n"}})
		if code != 0 {
			t.Fatalf("nobody writing /tmp and /dev/shm: exit %d stderr %q", code, errs)
		}
	})

	t.Run("capabilities follow Privileged", func(t *testing.T) {
		full := fullCapBnd(t, ctx, d)
		for _, tt := range []struct {
			privileged bool
			want       string
		}{{false, "00000000a80425fb"}, {true, full}} {
			code, out, errs := runTask(t, ctx, d, orchestra.Task{ID: "caps-" + strconv.FormatBool(tt.privileged), Privileged: tt.privileged,
				Command: []string{"sh", "-c", "grep CapBnd /proc/self/status | cut -f2"}})
			if code != 0 || strings.TrimSpace(out) != tt.want {
				t.Errorf("privileged %v: exit %d stdout %q stderr %q, want CapBnd %s", tt.privileged, code, out, errs, tt.want)
			}
		}
		// Without CAP_SYS_ADMIN a root task cannot unmount the guest's share.
		code, _, _ := runTask(t, ctx, d, orchestra.Task{ID: "caps-umount", Command: []string{"umount", "-l", "/mnt/share"}})
		if code == 0 {
			t.Fatal("a task that is not privileged unmounted the guest's share")
		}
	})

	t.Run("20 MiB of output arrives intact", func(t *testing.T) {
		// 20 MiB, more than qemu-ga's 16 MiB capture limit, from a 1 MiB
		// pattern the host put in a volume (generating it in the guest is
		// CPU-bound under TCG).
		const size = 20 << 20
		vol, err := d.CreateVolume(ctx, "big-src", 0)
		if err != nil {
			t.Fatal(err)
		}
		chunk := make([]byte, 1<<20)
		for i := range chunk {
			chunk[i] = byte(i*7 + i/251)
		}
		if err := os.WriteFile(filepath.Join(vol.(*Volume).hostDir, "chunk"), chunk, 0o644); err != nil {
			t.Fatal(err)
		}
		want := sha256.New()
		for range size / len(chunk) {
			want.Write(chunk)
		}
		start := time.Now()
		c, err := d.RunContainer(ctx, orchestra.Task{ID: "big", Mounts: orchestra.Mounts{{Name: "big-src", Path: "/src"}},
			Command: []string{"sh", "-c", "for i in $(seq 20); do cat ./src/chunk; done; echo done >&2"}})
		if err != nil {
			t.Fatal(err)
		}
		st := testkit.MustWaitDone(t, c, taskTimeout)
		t.Logf("20 MiB of output took %s", time.Since(start).Round(time.Millisecond))
		got := sha256.New()
		var errb bytes.Buffer
		counter := &countWriter{w: got}
		if err := c.Logs(ctx, counter, &errb, false); err != nil {
			t.Fatal(err)
		}
		if st.ExitCode() != 0 || counter.n != size || !bytes.Equal(got.Sum(nil), want.Sum(nil)) || errb.String() != "done\n" {
			t.Fatalf("exit %d, %d bytes (want %d), sha256 match %v, stderr %q", st.ExitCode(), counter.n, size, bytes.Equal(got.Sum(nil), want.Sum(nil)), errb.String())
		}
	})

	t.Run("64 MiB of stdin into wc -c", func(t *testing.T) {
		const size = 64 << 20
		var before runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		start := time.Now()
		code, out, errs := runTask(t, ctx, d, orchestra.Task{ID: "stdin64", Command: []string{"wc", "-c"}, Stdin: &patternReader{left: size}})
		var after runtime.MemStats
		runtime.ReadMemStats(&after)
		t.Logf("64 MiB stdin took %s (%.1f MB/s); heap in use %d -> %d KiB", time.Since(start).Round(time.Millisecond),
			float64(size)/time.Since(start).Seconds()/1e6, before.HeapInuse>>10, after.HeapInuse>>10)
		if code != 0 || strings.TrimSpace(out) != strconv.Itoa(size) {
			t.Fatalf("exit %d, stdout %q, stderr %q, want %d", code, out, errs, size)
		}
		if after.HeapInuse > before.HeapInuse+16<<20 {
			t.Errorf("heap grew from %d to %d bytes while streaming stdin", before.HeapInuse, after.HeapInuse)
		}
	})

	t.Run("stdin streams before it ends", func(t *testing.T) {
		pr, pw := io.Pipe()
		c, err := d.RunContainer(ctx, orchestra.Task{ID: "stream", Command: []string{"sh", "-c", "read line; echo got $line; cat"}, Stdin: pr})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(pw, "first\n"); err != nil {
			t.Fatal(err)
		}
		// The first line must come back while stdin is still open.
		var out bytes.Buffer
		deadline := time.Now().Add(60 * time.Second)
		for !strings.Contains(out.String(), "got first") {
			if time.Now().After(deadline) {
				t.Fatalf("no output while stdin is open: %q", out.String())
			}
			time.Sleep(20 * time.Millisecond)
			out.Reset()
			if err := c.Logs(ctx, &out, io.Discard, false); err != nil {
				t.Fatal(err)
			}
		}
		_, _ = io.WriteString(pw, "rest")
		_ = pw.Close()
		st := testkit.MustWaitDone(t, c, taskTimeout)
		out.Reset()
		_ = c.Logs(ctx, &out, io.Discard, false)
		if st.ExitCode() != 0 || out.String() != "got first\nrest" {
			t.Fatalf("exit %d stdout %q", st.ExitCode(), out.String())
		}
	})

	t.Run("same mount path, different volumes", func(t *testing.T) {
		for _, v := range []string{"red", "blue"} {
			code, _, errs := runTask(t, ctx, d, orchestra.Task{ID: "write-" + v, Command: []string{"sh", "-c", "echo " + v + " > ./data/color"},
				Mounts: orchestra.Mounts{{Name: "vol-" + v, Path: "/data"}}})
			if code != 0 {
				t.Fatalf("write %s: exit %d stderr %q", v, code, errs)
			}
		}
		for _, v := range []string{"red", "blue"} {
			code, out, _ := runTask(t, ctx, d, orchestra.Task{ID: "read-" + v, Command: []string{"cat", "./data/color"},
				Mounts: orchestra.Mounts{{Name: "vol-" + v, Path: "/data"}}})
			if code != 0 || out != v+"\n" {
				t.Fatalf("read %s: exit %d stdout %q", v, code, out)
			}
		}
		// A task without the mount does not see it.
		code, out, _ := runTask(t, ctx, d, orchestra.Task{ID: "no-mount", Command: []string{"sh", "-c", "ls ./data 2>&1; exit 0"}})
		if code != 0 || !strings.Contains(out, "No such file") {
			t.Fatalf("a task without the mount: exit %d stdout %q, want ./data missing", code, out)
		}
		// Nested mount paths work too.
		code, out, errs := runTask(t, ctx, d, orchestra.Task{ID: "nested", Command: []string{"cat", "./a/b/color"},
			Mounts: orchestra.Mounts{{Name: "vol-red", Path: "/a/b"}}})
		if code != 0 || out != "red\n" {
			t.Fatalf("nested mount: exit %d stdout %q stderr %q", code, out, errs)
		}
	})

	t.Run("workdir and nested mounts without an image", func(t *testing.T) {
		task := orchestra.Task{ID: "nest-write", WorkDir: "repo",
			Mounts:  orchestra.Mounts{{Name: "nest-cache", Path: "repo/cache"}, {Name: "nest-repo", Path: "repo"}},
			Command: []string{"sh", "-c", "pwd; echo in > cache/f; echo out > o; grep CapBnd /proc/self/status | cut -f2"}}
		code, out, errs := runTask(t, ctx, d, task)
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if code != 0 || len(lines) != 2 || !strings.HasSuffix(lines[0], "/work/repo") || lines[1] != "00000000a80425fb" {
			t.Fatalf("exit %d stdout %q stderr %q; want the pwd in repo and the default bounding set", code, out, errs)
		}
		repo, _ := d.CreateVolume(ctx, "nest-repo", 0)
		cache, _ := d.CreateVolume(ctx, "nest-cache", 0)
		for _, f := range []struct{ path, want string }{{filepath.Join(repo.Path(), "o"), "out\n"}, {filepath.Join(cache.Path(), "f"), "in\n"}} {
			if data, err := os.ReadFile(f.path); err != nil || string(data) != f.want {
				t.Errorf("%s: %q, %v; want %q", f.path, data, err, f.want)
			}
		}
		if _, err := os.Stat(filepath.Join(repo.Path(), "cache", "f")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("the inner mount's file is in the outer volume too (%v)", err)
		}
		for _, wd := range []struct{ dir, want string }{{"/tmp", "/tmp"}, {"new/sub", "/work/new/sub"}} {
			code, out, errs := runTask(t, ctx, d, orchestra.Task{ID: "wd-" + wd.dir, WorkDir: wd.dir, Command: []string{"pwd"}})
			if code != 0 || !strings.HasSuffix(strings.TrimSpace(out), wd.want) {
				t.Errorf("WorkDir %s: exit %d stdout %q stderr %q, want a path ending in %s", wd.dir, code, out, errs, wd.want)
			}
		}
	})

	t.Run("users", func(t *testing.T) {
		tests := []struct{ user, want string }{
			{"", "0:0"}, {"root", "0:0"}, {"nobody", "65534:65534"}, {"1234", "1234:1234"}, {"1234:50", "1234:50"},
		}
		for i, tt := range tests {
			code, out, errs := runTask(t, ctx, d, orchestra.Task{ID: "user-" + strconv.Itoa(i), User: tt.user,
				Command: []string{"sh", "-c", "echo $(id -u):$(id -g); env"}, Env: map[string]string{"ONLY": "this"}})
			// env itself, not through sh, shows exactly the task's variables.
			_, envOut, _ := runTask(t, ctx, d, orchestra.Task{ID: "user-env-" + strconv.Itoa(i), User: tt.user,
				Command: []string{"env"}, Env: map[string]string{"ONLY": "this"}})
			if envOut != "ONLY=this\nPATH="+defaultPath+"\n" {
				t.Errorf("user %q: env printed %q, want exactly ONLY and the default PATH", tt.user, envOut)
			}
			lines := strings.Split(strings.TrimSpace(out), "\n")
			if code != 0 || lines[0] != tt.want {
				t.Fatalf("user %q: exit %d stdout %q stderr %q, want %s", tt.user, code, out, errs, tt.want)
			}
			for _, l := range lines[1:] {
				name, _, _ := strings.Cut(l, "=")
				switch name {
				case "ONLY", "PATH", "PWD", "SHLVL":
				default:
					t.Errorf("user %q: unexpected variable %q in the task's env", tt.user, l)
				}
			}
		}
		code, _, errs := runTask(t, ctx, d, orchestra.Task{ID: "user-missing", User: "nosuchuser", Command: []string{"true"}})
		if code == 0 || errs == "" {
			t.Fatalf("unknown user: exit %d stderr %q, want a failure", code, errs)
		}
	})

	t.Run("exit codes and signals", func(t *testing.T) {
		tests := []struct {
			cmd  []string
			want int
		}{
			{[]string{"sh", "-c", "exit 42"}, 42},
			{[]string{"sh", "-c", "kill -9 $$"}, 137},
			{[]string{"sh", "-c", "kill -15 $$"}, 143},
			{[]string{"no-such-command"}, 127},
		}
		for i, tt := range tests {
			code, _, errs := runTask(t, ctx, d, orchestra.Task{ID: "code-" + strconv.Itoa(i), Command: tt.cmd})
			if code != tt.want {
				t.Errorf("%v: exit %d (stderr %q), want %d", tt.cmd, code, errs, tt.want)
			}
			if tt.want > 128 && errs != "" {
				t.Errorf("%v: stderr %q, want only what the task wrote (nothing)", tt.cmd, errs)
			}
		}
	})

	t.Run("follow logs streams live", func(t *testing.T) {
		c, err := d.RunContainer(ctx, orchestra.Task{ID: "follow", Command: []string{"sh", "-c", "echo one; echo e1 >&2; sleep 1; echo two"}})
		if err != nil {
			t.Fatal(err)
		}
		w := &timedWriter{start: time.Now()}
		// Only Write (no ReadFrom), so every chunk is timed.
		var errb bytes.Buffer
		if err := c.Logs(ctx, struct{ io.Writer }{w}, &errb, true); err != nil {
			t.Fatal(err)
		}
		st, _ := c.Status(ctx)
		if !st.IsDone() || w.String() != "one\ntwo\n" || errb.String() != "e1\n" {
			t.Fatalf("done %v, stdout %q, stderr %q", st.IsDone(), w.String(), errb.String())
		}
		if w.firstAt >= w.lastAt-500*time.Millisecond {
			t.Errorf("the first line came at %s and the last at %s: not streamed", w.firstAt, w.lastAt)
		}
	})

	t.Run("cleanup kills a running task", func(t *testing.T) {
		c, err := d.RunContainer(ctx, orchestra.Task{ID: "sleeper", Command: []string{"sh", "-c", "echo started; sleep 600"}})
		if err != nil {
			t.Fatal(err)
		}
		for {
			var out bytes.Buffer
			_ = c.Logs(ctx, &out, io.Discard, false)
			if out.String() == "started\n" {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		start := time.Now()
		if err := c.Cleanup(ctx); err != nil {
			t.Fatal(err)
		}
		st, _ := c.Status(ctx)
		if !st.IsDone() || st.ExitCode() != 137 {
			t.Fatalf("after Cleanup: done %v exit %d, want done 137", st.IsDone(), st.ExitCode())
		}
		t.Logf("cleanup of a running task took %s", time.Since(start).Round(time.Millisecond))
		if _, err := d.GetContainer(ctx, "sleeper"); !errors.Is(err, orchestra.ErrContainerNotFound) {
			t.Fatalf("GetContainer after Cleanup: %v, want ErrContainerNotFound", err)
		}
		if err := c.Cleanup(ctx); err != nil {
			t.Fatalf("second Cleanup: %v", err)
		}
	})

	t.Run("get container", func(t *testing.T) {
		c, err := d.RunContainer(ctx, orchestra.Task{ID: "findme", Command: []string{"echo", "found"}})
		if err != nil {
			t.Fatal(err)
		}
		got, err := d.GetContainer(ctx, "findme")
		if err != nil || got != c {
			t.Fatalf("GetContainer: %v, %v; want the same container", got, err)
		}
		if _, err := d.GetContainer(ctx, "absent"); !errors.Is(err, orchestra.ErrContainerNotFound) {
			t.Fatalf("GetContainer(absent): %v, want ErrContainerNotFound", err)
		}
		testkit.MustWaitDone(t, c, taskTimeout)
	})

	t.Run("close leaves no qemu process", func(t *testing.T) {
		pid := d.vm.cmd.Process.Pid
		if err := d.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(filepath.Join("/proc", strconv.Itoa(pid))); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("/proc/%d still exists after Close (err %v)", pid, err)
		}
		if left, err := Leaks(ns); err != nil || len(left) > 0 {
			t.Fatalf("leaks after Close: %v %v", left, err)
		}
		if _, err := d.RunContainer(ctx, orchestra.Task{ID: "late", Command: []string{"true"}}); !errors.Is(err, orchestra.ErrClosed) {
			t.Fatalf("RunContainer after Close: %v, want ErrClosed", err)
		}
		if err := d.Close(); err != nil {
			t.Fatalf("second Close: %v", err)
		}
	})
}

// patternReader yields left bytes of a repeating pattern, without holding them.
type patternReader struct{ left, off int }

func (p *patternReader) Read(b []byte) (int, error) {
	if p.left == 0 {
		return 0, io.EOF
	}
	n := min(len(b), p.left)
	for i := range n {
		b[i] = byte((p.off + i) % 251)
	}
	p.off += n
	p.left -= n
	return n, nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// timedWriter records when its first and last writes came.
type timedWriter struct {
	bytes.Buffer
	start           time.Time
	firstAt, lastAt time.Duration
}

func (w *timedWriter) Write(p []byte) (int, error) {
	if w.Len() == 0 {
		w.firstAt = time.Since(w.start)
	}
	w.lastAt = time.Since(w.start)
	return w.Buffer.Write(p)
}

// TestCloseDuringBoot: Close cancels a boot in progress instead of waiting
// for it, and nothing is left behind.
func TestCloseDuringBoot(t *testing.T) {
	requireQEMU(t)
	d, _ := newTestDriver(t)
	errc := make(chan error, 1)
	go func() {
		_, err := d.RunContainer(t.Context(), orchestra.Task{ID: "a", Command: []string{"true"}})
		errc <- err
	}()
	// Wait until qemu runs, then close while the guest boots.
	for {
		if left, _ := Leaks(d.namespace); len(left) > 0 && strings.Contains(strings.Join(left, " "), "qemu process") {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	start := time.Now()
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("Close during boot took %s", took)
	}
	if err := <-errc; !errors.Is(err, orchestra.ErrClosed) {
		t.Fatalf("RunContainer during Close: %v, want ErrClosed", err)
	}
}

func TestSweepStale(t *testing.T) {
	base := t.TempDir()
	mk := func(name, owner string) string {
		dir := filepath.Join(base, dirPrefix+name)
		if err := os.MkdirAll(filepath.Join(dir, "share"), 0o755); err != nil {
			t.Fatal(err)
		}
		if owner != "" {
			if err := os.WriteFile(filepath.Join(dir, ownerFile), []byte(owner), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		return dir
	}
	dead := mk("dead-1", "999999999")
	alive := mk("alive-1", strconv.Itoa(os.Getpid()))
	unmarked := mk("unmarked-1", "")
	sweepStale(base, testLogger(t))
	for dir, wantGone := range map[string]bool{dead: true, alive: false, unmarked: false} {
		_, err := os.Stat(dir)
		if gone := errors.Is(err, os.ErrNotExist); gone != wantGone {
			t.Errorf("%s: gone %v, want %v", filepath.Base(dir), gone, wantGone)
		}
	}
}

// TestQemuDiesWithItsProcess: a driver process killed with SIGKILL (as a
// crashed plugin would be) takes its qemu with it (Pdeathsig), and the next
// process's sweep removes the directory it left.
func TestQemuDiesWithItsProcess(t *testing.T) {
	if ns := os.Getenv("QEMU_TEST_HELPER_NAMESPACE"); ns != "" {
		drv, err := New(ns, Config{}, testLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := drv.ensureVM(t.Context()); err != nil {
			t.Fatal(err)
		}
		fmt.Println("ready")
		time.Sleep(10 * time.Minute)
		return
	}
	requireQEMU(t)
	ns := "qt-orphan-" + time.Now().Format("150405.000000")
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^TestQemuDiesWithItsProcess$", "-test.timeout=5m")
	cmd.Env = append(os.Environ(), "QEMU_TEST_HELPER_NAMESPACE="+ns)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || line != "ready\n" {
		t.Fatalf("helper: %q, %v", line, err)
	}
	if left, _ := Leaks(ns); len(left) != 3 {
		t.Fatalf("while the helper runs: %v, want its qemu process, its private directory and the namespace's directory", left)
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	_ = cmd.Wait()
	deadline := time.Now().Add(10 * time.Second)
	for {
		left, err := Leaks(ns)
		if err != nil {
			t.Fatal(err)
		}
		if len(left) == 2 && !strings.Contains(strings.Join(left, " "), "qemu process") {
			break // qemu is gone; only the directories are left
		}
		if time.Now().After(deadline) {
			t.Fatalf("10 s after the helper was killed: %v, want only its directories", left)
		}
		time.Sleep(20 * time.Millisecond)
	}
	base := os.TempDir()
	if len(base) > 60 {
		base = "/tmp"
	}
	sweepStale(base, testLogger(t))
	// The namespace's directory outlives the process (its volumes and
	// tasks' files belong to the namespace) until a driver of it closes.
	left, _ := Leaks(ns)
	if len(left) != 1 || !strings.HasPrefix(left[0], "namespace directory ") {
		t.Fatalf("after the sweep: %v, want only the namespace's directory", left)
	}
	drv, err := New(ns, Config{}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := drv.Close(); err != nil {
		t.Fatal(err)
	}
	if left, _ := Leaks(ns); len(left) != 0 {
		t.Fatalf("after Close: %v", left)
	}
}

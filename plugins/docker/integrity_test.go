package docker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
	"time"

	"github.com/jtarchie/pocketci/orchestra"
	"github.com/jtarchie/pocketci/orchestra/conformance/testkit"
)

// follow runs Logs with follow on c and returns both streams.
func follow(ctx context.Context, tb testing.TB, c orchestra.Container) (string, string) {
	tb.Helper()
	var out, errb bytes.Buffer
	if err := c.Logs(ctx, &out, &errb, true); err != nil {
		tb.Fatalf("Logs with follow: %v", err)
	}
	return out.String(), errb.String()
}

// TestInitLikeNative checks that tasks run under the engine's init, as on a
// native host: a command that SIGKILLs itself exits 137, PID 1 is
// docker-init, and /dev/stdin reads the task's stdin.
func TestInitLikeNative(t *testing.T) {
	d, _ := newTestDriver(t, "init")
	ctx := testContext(t)
	tests := []struct {
		name     string
		command  string
		stdin    string
		wantCode int
		wantOut  string
	}{
		{"kill -9 self", "kill -9 $$", "", 137, ""},
		{"kill -TERM self", "kill -TERM $$", "", 143, ""},
		{"pid 1 is the init", "tr '\\0' ' ' < /proc/1/cmdline | cut -d' ' -f1", "", 0, "/sbin/docker-init\n"},
		{"/dev/stdin", "cat < /dev/stdin", "hi", 0, "hi"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			task := orchestra.Task{ID: fmt.Sprintf("init-%d", i), Image: testImage, Command: []string{"sh", "-c", tt.command}}
			if tt.stdin != "" {
				task.Stdin = strings.NewReader(tt.stdin)
			}
			r := testkit.MustRunToEnd(t, ctx, d, task)
			if r.ExitCode != tt.wantCode || string(r.Stdout) != tt.wantOut {
				t.Fatalf("%s: exit %d stdout %q stderr %q, want exit %d stdout %q", tt.command, r.ExitCode, string(r.Stdout), string(r.Stderr), tt.wantCode, tt.wantOut)
			}
		})
	}
}

// TestFollowLogsTrailingPartialLine runs a command whose last output has no
// newline, on both streams, 50 times: Logs with follow must give every byte once
// in every run (the engine's follow stream alone drops the partial line in
// some runs, moby/moby#43860).
func TestFollowLogsTrailingPartialLine(t *testing.T) {
	d, _ := newTestDriver(t, "partial")
	ctx := testContext(t)
	const runs, parallel = 50, 5
	var wg sync.WaitGroup
	errs := make(chan error, runs)
	sem := make(chan struct{}, parallel)
	for i := range runs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			id := fmt.Sprintf("partial-%d", i)
			c, err := d.RunContainer(ctx, orchestra.Task{ID: id, Image: testImage,
				Command: []string{"sh", "-c", "echo line; printf tail; echo eline >&2; printf etail >&2"}})
			if err != nil {
				errs <- err
				return
			}
			var out, errb bytes.Buffer
			if err := c.Logs(ctx, &out, &errb, true); err != nil {
				errs <- fmt.Errorf("%s: Logs with follow: %w", id, err)
				return
			}
			if out.String() != "line\ntail" || errb.String() != "eline\netail" {
				errs <- fmt.Errorf("%s: Logs with follow gave stdout %q stderr %q, want %q and %q", id, out.String(), errb.String(), "line\ntail", "eline\netail")
			}
			if err := c.Cleanup(ctx); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestFollowLogsLarge follows 8 MiB of stdout (ending without a newline)
// and some stderr, and compares both byte for byte.
func TestFollowLogsLarge(t *testing.T) {
	d, _ := newTestDriver(t, "large")
	ctx := testContext(t)
	const size = 8 << 20
	line := "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_\n" // 65 bytes
	want := bytes.Repeat([]byte(line), size/len(line)+1)[:size]
	c, err := d.RunContainer(ctx, orchestra.Task{ID: "large", Image: testImage, Command: []string{"sh", "-c",
		"yes " + strings.TrimSuffix(line, "\n") + " | head -c " + fmt.Sprint(size) + "; seq 1 1000 >&2; printf end >&2"}})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	out, errOut := follow(ctx, t, c)
	followed := time.Since(start)
	start = time.Now()
	if err := c.Logs(ctx, io.Discard, io.Discard, false); err != nil {
		t.Fatal(err)
	}
	t.Logf("Logs with follow of 8 MiB (run and re-read included) took %s; one Logs of the finished log %s", followed, time.Since(start))
	var wantErr strings.Builder
	for i := 1; i <= 1000; i++ {
		fmt.Fprintf(&wantErr, "%d\n", i)
	}
	wantErr.WriteString("end")
	if out != string(want) {
		t.Errorf("stdout: %d bytes, want %d; first difference at byte %d", len(out), len(want), firstDiff(out, string(want)))
	}
	if errOut != wantErr.String() {
		t.Errorf("stderr: %d bytes, want %d; first difference at byte %d", len(errOut), wantErr.Len(), firstDiff(errOut, wantErr.String()))
	}
}

func firstDiff(a, b string) int {
	for i := 0; i < len(a) && i < len(b); i++ {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// TestOutputOrderAndNoFinalNewline checks that Logs without and with follow keep
// the order within each stream and the output's last bytes without a
// newline.
func TestOutputOrderAndNoFinalNewline(t *testing.T) {
	d, _ := newTestDriver(t, "order")
	ctx := testContext(t)
	cmd := "for i in $(seq 1 200); do echo o$i; echo e$i >&2; done; printf o-end; printf e-end >&2"
	var wantOut, wantErr strings.Builder
	for i := 1; i <= 200; i++ {
		fmt.Fprintf(&wantOut, "o%d\n", i)
		fmt.Fprintf(&wantErr, "e%d\n", i)
	}
	wantOut.WriteString("o-end")
	wantErr.WriteString("e-end")
	c, err := d.RunContainer(ctx, orchestra.Task{ID: "order", Image: testImage, Command: []string{"sh", "-c", cmd}})
	if err != nil {
		t.Fatal(err)
	}
	out, errOut := follow(ctx, t, c)
	if out != wantOut.String() || errOut != wantErr.String() {
		t.Errorf("Logs with follow: stdout %q stderr %q", out, errOut)
	}
	var lo, le bytes.Buffer
	if err := c.Logs(ctx, &lo, &le, false); err != nil {
		t.Fatal(err)
	}
	if lo.String() != wantOut.String() || le.String() != wantErr.String() {
		t.Errorf("Logs: stdout %q stderr %q", lo.String(), le.String())
	}
}

// TestStdinReaderFails gives a task a stdin reader that fails mid-stream:
// the task must be stopped before it sees EOF, and Status must report an
// error that names stdin and wraps the reader's error, never success.
func TestStdinReaderFails(t *testing.T) {
	d, _ := newTestDriver(t, "stdinfail")
	ctx := testContext(t)
	readErr := errors.New("caller's input broke")
	c, err := d.RunContainer(ctx, orchestra.Task{ID: "stdin-fails", Image: testImage,
		Command: []string{"sh", "-c", "cat > /dev/null; echo read-to-eof"},
		Stdin:   io.MultiReader(bytes.NewReader(bytes.Repeat([]byte("x"), 64<<10)), iotest.ErrReader(readErr))})
	if err != nil {
		t.Fatal(err)
	}
	for {
		st, err := c.Status(ctx)
		if err != nil {
			if !errors.Is(err, readErr) || !strings.Contains(err.Error(), "stdin") {
				t.Fatalf("Status error %v: want one naming stdin and wrapping the reader's error", err)
			}
			break
		}
		if st.IsDone() {
			t.Fatalf("Status says done with exit %d and no error after the stdin reader failed", st.ExitCode())
		}
		select {
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
	// The command never saw a clean end of input.
	inner := c.(*Container)
	waitCtx := testContext(t)
	if err := inner.waitExited(waitCtx); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := c.Logs(ctx, &out, io.Discard, false); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out.String(), "read-to-eof") {
		t.Fatalf("the command read a clean EOF on truncated stdin: stdout %q", out.String())
	}
	st, _ := inner.state(ctx)
	if st.ExitCode() == 0 {
		t.Fatalf("the container exited 0 after its stdin failed")
	}
}

// TestCleanupKillsDescendants starts a task whose children leave its
// process group (setsid, a subshell's background job): Cleanup of the
// running task must kill every one of them.
func TestCleanupKillsDescendants(t *testing.T) {
	d, _ := newTestDriver(t, "descendants")
	ctx := testContext(t)
	c, err := d.RunContainer(ctx, orchestra.Task{ID: "tree", Image: testImage,
		Command: []string{"sh", "-c", "setsid sleep 3217 & (sleep 3218 &); sleep 3219"}})
	if err != nil {
		t.Fatal(err)
	}
	id := c.(*Container).id
	var pids []string
	for len(pids) < 4 { // docker-init, sh and the three sleeps (the subshell may linger)
		top, err := d.client.ContainerTop(ctx, id, nil)
		if err != nil {
			t.Fatalf("top: %v", err)
		}
		pids = pids[:0]
		col := 1
		for i, title := range top.Titles {
			if title == "PID" {
				col = i
			}
		}
		sleeps := 0
		for _, p := range top.Processes {
			pids = append(pids, p[col])
			if strings.Contains(strings.Join(p, " "), "sleep 321") {
				sleeps++
			}
		}
		if sleeps < 3 {
			pids = pids[:0]
		}
		if ctx.Err() != nil {
			t.Fatal(ctx.Err())
		}
	}
	starts := map[string]string{}
	for _, pid := range pids {
		stat, err := os.ReadFile("/proc/" + pid + "/stat")
		if err != nil {
			t.Fatalf("the test cannot see the task's processes (host PID %s): %v", pid, err)
		}
		starts[pid] = startTime(stat)
	}
	if err := c.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	for pid, start := range starts {
		stat, err := os.ReadFile("/proc/" + pid + "/stat")
		if err == nil && startTime(stat) == start {
			t.Errorf("process %s (%s) survived Cleanup", pid, strings.Fields(string(stat))[1])
		}
	}
}

// startTime is field 22 of /proc/<pid>/stat (after the command name, which
// may hold spaces).
func startTime(stat []byte) string {
	s := string(stat)
	if i := strings.LastIndexByte(s, ')'); i >= 0 {
		s = s[i+1:]
	}
	f := strings.Fields(s)
	if len(f) < 20 {
		return ""
	}
	return f[19]
}

// TestUnusualIDsRunAndAreIdempotent runs tasks whose IDs start with _ or -,
// hold spaces or unicode, or are over 200 bytes: each runs, a second
// RunContainer returns the same container without running it again, and a
// new driver instance finds it.
func TestUnusualIDsRunAndAreIdempotent(t *testing.T) {
	d, ns := newTestDriver(t, "ids")
	ctx := testContext(t)
	ids := []string{"_lead", "-lead", "with space", "ünïcode ✓", strings.Repeat("long-", 50), strings.Repeat("é", 120)}
	other, err := New(ns, Config{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	for i, id := range ids {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			task := orchestra.Task{ID: id, Image: testImage, Command: []string{"sh", "-c", "echo ran >> ./count/n; cat ./count/n"},
				Mounts: orchestra.Mounts{{Name: fmt.Sprintf("count-%d", i), Path: "count"}}}
			r := testkit.MustRunToEnd(t, ctx, d, task)
			if r.ExitCode != 0 || string(r.Stdout) != "ran\n" {
				t.Fatalf("task %q: exit %d stdout %q stderr %q", id, r.ExitCode, string(r.Stdout), string(r.Stderr))
			}
			again, err := d.RunContainer(ctx, task)
			if err != nil {
				t.Fatal(err)
			}
			found, err := other.RunContainer(ctx, task)
			if err != nil {
				t.Fatal(err)
			}
			want := r.Container.(*Container).id
			if again.(*Container).id != want || found.(*Container).id != want {
				t.Fatalf("task %q: RunContainer again gave %s, a new instance %s, want %s", id, again.(*Container).id, found.(*Container).id, want)
			}
			var out bytes.Buffer
			if err := found.Logs(ctx, &out, io.Discard, false); err != nil || out.String() != "ran\n" {
				t.Fatalf("task %q ran again: %q %v", id, out.String(), err)
			}
		})
	}
}

// TestRelativeMountShared mounts one volume at a relative path in two
// tasks: it is at <working dir>/<path> (/data) and the second task reads
// what the first wrote; an absolute path in a third reaches the same
// volume.
func TestRelativeMountShared(t *testing.T) {
	d, _ := newTestDriver(t, "relmount")
	ctx := testContext(t)
	write := testkit.MustRunToEnd(t, ctx, d, orchestra.Task{ID: "write", Image: testImage, Command: []string{"sh", "-c", "echo shared > data/f"},
		Mounts: orchestra.Mounts{{Name: "vol", Path: "data"}}})
	read := testkit.MustRunToEnd(t, ctx, d, orchestra.Task{ID: "read", Image: testImage, Command: []string{"cat", "/data/f"},
		Mounts: orchestra.Mounts{{Name: "vol", Path: "data"}}})
	abs := testkit.MustRunToEnd(t, ctx, d, orchestra.Task{ID: "abs", Image: testImage, Command: []string{"cat", "/elsewhere/f"},
		Mounts: orchestra.Mounts{{Name: "vol", Path: "/elsewhere"}}})
	if write.ExitCode != 0 || string(read.Stdout) != "shared\n" || string(abs.Stdout) != "shared\n" {
		t.Fatalf("write exit %d (%q); read %q (%q); absolute %q (%q)", write.ExitCode, string(write.Stderr), string(read.Stdout), string(read.Stderr), string(abs.Stdout), string(abs.Stderr))
	}
}

// TestNothingKeptPerFinishedTask runs tasks to the end and cleans them up:
// the driver keeps no container, lock or volume entry for any of them.
func TestNothingKeptPerFinishedTask(t *testing.T) {
	d, _ := newTestDriver(t, "kept")
	ctx := testContext(t)
	for i := range 5 {
		r := testkit.MustRunToEnd(t, ctx, d, orchestra.Task{ID: fmt.Sprintf("t-%d", i), Image: testImage, Command: []string{"true"},
			Mounts: orchestra.Mounts{{Name: "v", Path: "v"}}})
		if err := r.Container.Cleanup(ctx); err != nil {
			t.Fatal(err)
		}
	}
	v, err := d.CreateVolume(ctx, "v", 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	d.mu.Lock()
	containers, volumes := len(d.containers), len(d.volumes)
	d.mu.Unlock()
	if containers != 0 || volumes != 0 || d.taskLocks.len() != 0 {
		t.Fatalf("after 5 finished and cleaned-up tasks the driver keeps %d containers, %d volumes, %d locks", containers, volumes, d.taskLocks.len())
	}
}

// TestLongLinesKeepTheirNewline runs commands whose lines are longer than
// the engine's 16 KiB line buffer, on both streams, and reads them with
// Logs, without and with follow, and from a second instance: every byte
// comes back, as `docker run -i` gives them. (A 20.10 engine's local log
// driver drops the newline of a line it split; the driver puts it back.)
func TestLongLinesKeepTheirNewline(t *testing.T) {
	d, ns := newTestDriver(t, "longline")
	ctx := testContext(t)
	if err := d.connect(ctx); err != nil {
		t.Fatal(err)
	}
	a := func(n int) string { return "head -c " + fmt.Sprint(n) + " /dev/zero | tr '\\0' a" }
	long := strings.Repeat("a", 20000)
	exact := strings.Repeat("a", splitSize)
	tests := []struct {
		name, cmd      string
		stdout, stderr string
	}{
		{"20001 bytes", a(20000) + "; echo", long + "\n", ""},
		{"then more", a(20000) + "; echo; echo y; " + a(40000) + " >&2; echo >&2; echo e >&2",
			long + "\ny\n", strings.Repeat("a", 40000) + "\ne\n"},
		{"exactly 16 KiB then more", a(splitSize) + "; echo; echo x", exact + "\nx\n", ""},
		{"short tail after long line", a(20000) + "; echo; printf tail", long + "\ntail", ""},
	}
	// Where the engine kept nothing to tell them apart, the driver takes
	// a stream's last split line for a line with its newline (README).
	ambiguous := []struct{ name, cmd, stdout string }{
		{"20000 bytes without newline", a(20000), long},
		{"exactly 16 KiB at the end", a(splitSize) + "; echo", exact + "\n"},
	}
	for _, tt := range ambiguous {
		want := tt.stdout
		if d.repairSplitLines() && !strings.HasSuffix(want, "\n") {
			want += "\n" // the documented limitation of a 20.10 engine
		}
		tests = append(tests, struct{ name, cmd, stdout, stderr string }{tt.name, tt.cmd, want, ""})
	}
	other, err := New(ns, Config{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := d.RunContainer(ctx, orchestra.Task{ID: fmt.Sprint("long-", i), Image: testImage, Command: []string{"sh", "-c", tt.cmd}})
			if err != nil {
				t.Fatal(err)
			}
			out, errOut := follow(ctx, t, c)
			checkBytes(t, "Logs with follow", out, errOut, tt.stdout, tt.stderr)
			var lo, le bytes.Buffer
			if err := c.Logs(ctx, &lo, &le, false); err != nil {
				t.Fatal(err)
			}
			checkBytes(t, "Logs", lo.String(), le.String(), tt.stdout, tt.stderr)
			found, err := other.GetContainer(ctx, c.ID())
			if err != nil {
				t.Fatal(err)
			}
			lo.Reset()
			le.Reset()
			if err := found.Logs(ctx, &lo, &le, false); err != nil {
				t.Fatal(err)
			}
			checkBytes(t, "Logs from a second instance", lo.String(), le.String(), tt.stdout, tt.stderr)
		})
	}
}

func checkBytes(t *testing.T, how, stdout, stderr, wantOut, wantErr string) {
	t.Helper()
	if stdout != wantOut {
		t.Errorf("%s: stdout %d bytes, want %d; first difference at byte %d", how, len(stdout), len(wantOut), firstDiff(stdout, wantOut))
	}
	if stderr != wantErr {
		t.Errorf("%s: stderr %d bytes, want %d; first difference at byte %d", how, len(stderr), len(wantErr), firstDiff(stderr, wantErr))
	}
}

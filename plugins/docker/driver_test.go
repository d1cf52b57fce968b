package docker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"

	"github.com/jtarchie/pocketci/orchestra"
	"github.com/jtarchie/pocketci/orchestra/conformance/testkit"
)

var validName = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]*$`)

// TestNames checks the container and volume names made with
// orchestra.SafeName: kept when valid, else valid, bounded and hashed, and
// never the same for two IDs.
func TestNames(t *testing.T) {
	tests := []struct {
		namespace, id string
		want          string // exact, or "" to check only validity and hashing
		hashed        bool
	}{
		{"ns", "task-1", "ns-task-1", false},
		{"ns", "a.b_c", "ns-a.b_c", false},
		{"ns", "_lead", "ns-_lead", false},
		{"ns", "-lead", "ns--lead", false},
		{"ns", "with space", "", true},
		{"ns", "slash/y", "", true},
		{"_ns", "x", "", true},
		{"ns", "ünïcode", "", true},
		{"ns", strings.Repeat("a", 300), "", true},
	}
	seen := map[string]string{}
	for _, tt := range tests {
		for _, got := range []string{containerName(tt.namespace, tt.id), volumeName(tt.namespace, tt.id)} {
			if !validName.MatchString(got) {
				t.Errorf("name(%q, %q) = %q: not a valid Docker name", tt.namespace, tt.id, got)
			}
			if len(got) > orchestra.DockerNameRule.MaxLen {
				t.Errorf("name(%q, %q) is %d long, want <= %d", tt.namespace, tt.id, len(got), orchestra.DockerNameRule.MaxLen)
			}
			if tt.want != "" && got != tt.want {
				t.Errorf("name(%q, %q) = %q, want %q", tt.namespace, tt.id, got, tt.want)
			}
			if hashed := got != tt.namespace+"-"+tt.id; hashed != tt.hashed {
				t.Errorf("name(%q, %q) = %q: changed=%v, want %v", tt.namespace, tt.id, got, hashed, tt.hashed)
			}
		}
		got := containerName(tt.namespace, tt.id)
		if prev, ok := seen[got]; ok {
			t.Errorf("name collision: %q and %q both give %q", prev, tt.id, got)
		}
		seen[got] = tt.id
	}
	if a, b := containerName("ns", "a b"), containerName("ns", "a/b"); a == b {
		t.Errorf("name collision: %q", a)
	}
}

func TestStatusOf(t *testing.T) {
	now := time.Now()
	recent := now.Add(-time.Second)
	old := now.Add(-2 * createdGrace)
	tests := []struct {
		name     string
		state    container.State
		created  time.Time
		done     bool
		code     int
		startErr bool
	}{
		{"running", container.State{Status: "running", Running: true}, recent, false, 0, false},
		{"paused", container.State{Status: "paused", Running: true, Paused: true}, recent, false, 0, false},
		{"restarting", container.State{Status: "restarting", Running: true, Restarting: true}, recent, false, 0, false},
		{"exited 0", container.State{Status: "exited"}, recent, true, 0, false},
		{"exited 3", container.State{Status: "exited", ExitCode: 3}, recent, true, 3, false},
		{"exited oom", container.State{Status: "exited", ExitCode: 137, OOMKilled: true}, recent, true, 137, false},
		{"exited oom no code", container.State{Status: "exited", ExitCode: -1, OOMKilled: true}, recent, true, 137, false},
		{"dead", container.State{Status: "dead", Dead: true, ExitCode: 2}, recent, true, 2, false},
		{"removing running", container.State{Status: "removing", Running: true}, recent, false, 0, false},
		{"removing exited", container.State{Status: "removing", ExitCode: 1}, recent, true, 1, false},
		{"created fresh", container.State{Status: "created"}, recent, false, 0, false},
		{"created start failed", container.State{Status: "created", ExitCode: 127, Error: "exec: not found"}, recent, true, 127, true},
		{"created forever", container.State{Status: "created"}, old, true, exitNeverStarted, true},
		{"unknown running", container.State{Status: "weird", Running: true}, recent, false, 0, false},
		{"unknown stopped", container.State{Status: "weird", ExitCode: 4}, recent, true, 4, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := tt.state
			s, msg := statusOf(&st, tt.created, now)
			if s.IsDone() != tt.done || s.ExitCode() != tt.code || (msg != "") != tt.startErr {
				t.Errorf("statusOf(%+v) = done %v code %d msg %q; want done %v code %d start error %v",
					tt.state, s.IsDone(), s.ExitCode(), msg, tt.done, tt.code, tt.startErr)
			}
		})
	}
}

func TestUserNobody(t *testing.T) {
	d, _ := newTestDriver(t, "user")
	ctx := testContext(t)
	r := testkit.MustRunToEnd(t, ctx, d, orchestra.Task{ID: "whoami", Image: testImage, Command: []string{"whoami"}, User: "nobody"})
	if r.ExitCode != 0 || string(r.Stdout) != "nobody\n" {
		t.Fatalf("whoami as nobody: exit %d stdout %q stderr %q", r.ExitCode, string(r.Stdout), string(r.Stderr))
	}
	r = testkit.MustRunToEnd(t, ctx, d, orchestra.Task{ID: "whoami-root", Image: testImage, Command: []string{"whoami"}})
	if r.ExitCode != 0 || string(r.Stdout) != "root\n" {
		t.Fatalf("whoami by default: exit %d stdout %q stderr %q", r.ExitCode, string(r.Stdout), string(r.Stderr))
	}
}

func TestPrivileged(t *testing.T) {
	d, _ := newTestDriver(t, "priv")
	ctx := testContext(t)
	r := testkit.MustRunToEnd(t, ctx, d, orchestra.Task{ID: "kmsg-false", Image: testImage, Command: []string{"ls", "-l", "/dev/kmsg"}})
	if r.ExitCode == 0 {
		t.Errorf("ls -l /dev/kmsg without Privileged succeeded: stdout %q", string(r.Stdout))
	}
	r = testkit.MustRunToEnd(t, ctx, d, orchestra.Task{ID: "kmsg-true", Image: testImage, Command: []string{"ls", "-l", "/dev/kmsg"}, Privileged: true})
	info, err := d.client.ContainerInspect(ctx, r.Container.(*Container).id)
	if err != nil {
		t.Fatal(err)
	}
	if info.HostConfig == nil || !info.HostConfig.Privileged {
		t.Fatalf("Privileged task's container is not privileged: %+v", info.HostConfig)
	}
	if r.ExitCode != 0 && strings.Contains(string(r.Stderr), "unable to apply caps") {
		// Some hosts (a daemon without every capability, as in some VMs)
		// cannot run privileged containers at all; `docker run
		// --privileged` fails the same way there.
		out, cliErr := exec.CommandContext(ctx, "docker", "run", "--rm", "--privileged", testImage, "true").CombinedOutput()
		if cliErr != nil && strings.Contains(string(out), "unable to apply caps") {
			t.Skipf("this engine cannot run privileged containers (docker run --privileged fails too: %s); "+
				"the driver reported it as exit %d with the runtime's message on stderr", strings.TrimSpace(string(out)), r.ExitCode)
		}
	}
	if r.ExitCode != 0 {
		t.Errorf("ls -l /dev/kmsg with Privileged: exit %d (stdout %q stderr %q)", r.ExitCode, string(r.Stdout), string(r.Stderr))
	}
}

func TestLimits(t *testing.T) {
	d, _ := newTestDriver(t, "limits")
	ctx := testContext(t)
	const mem = 64 << 20
	const cpu = 512
	cmd := `if [ -e /sys/fs/cgroup/memory/memory.limit_in_bytes ]; then
  cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/cpu/cpu.shares; echo v1
else
  cat /sys/fs/cgroup/memory.max /sys/fs/cgroup/cpu.weight; echo v2
fi`
	r := testkit.MustRunToEnd(t, ctx, d, orchestra.Task{
		ID: "limits", Image: testImage, Command: []string{"sh", "-c", cmd},
		ContainerLimits: orchestra.ContainerLimits{CPU: cpu, Memory: mem},
	})
	lines := strings.Fields(string(r.Stdout))
	if r.ExitCode != 0 || len(lines) != 3 {
		t.Fatalf("reading cgroup files: exit %d stdout %q stderr %q", r.ExitCode, string(r.Stdout), string(r.Stderr))
	}
	if lines[0] != strconv.Itoa(mem) {
		t.Errorf("memory limit: got %s, want %d (cgroup %s)", lines[0], mem, lines[2])
	}
	wantCPU := strconv.Itoa(cpu)
	if lines[2] == "v2" {
		// cgroup v2 maps shares onto weight: 1 + ((shares-2)*9999)/262142.
		wantCPU = strconv.Itoa(1 + ((cpu-2)*9999)/262142)
	}
	if lines[1] != wantCPU {
		t.Errorf("cpu: got %s, want %s (cgroup %s)", lines[1], wantCPU, lines[2])
	}

	// Without limits the task is not limited.
	r = testkit.MustRunToEnd(t, ctx, d, orchestra.Task{ID: "no-limits", Image: testImage, Command: []string{"sh", "-c", cmd}})
	if lines := strings.Fields(string(r.Stdout)); len(lines) != 3 || lines[0] == strconv.Itoa(mem) || lines[1] == strconv.Itoa(cpu) {
		t.Errorf("without limits: got %q", string(r.Stdout))
	}
}

func TestOOMKill(t *testing.T) {
	d, _ := newTestDriver(t, "oom")
	ctx := testContext(t)
	r := testkit.MustRunToEnd(t, ctx, d, orchestra.Task{
		ID: "oom", Image: testImage, Command: []string{"tail", "/dev/zero"},
		ContainerLimits: orchestra.ContainerLimits{Memory: 16 << 20},
	})
	if r.ExitCode != 137 {
		t.Fatalf("OOM kill: exit %d, want 137 (stderr %q)", r.ExitCode, string(r.Stderr))
	}
}

func TestMissingImage(t *testing.T) {
	d, _ := newTestDriver(t, "noimage")
	ctx := testContext(t)
	const img = "pocketci-test/no-such-image:never"
	start := time.Now()
	_, err := d.RunContainer(ctx, orchestra.Task{ID: "missing", Image: img, Command: []string{"true"}})
	t.Logf("missing image reported after %s: %v", time.Since(start), err)
	if err == nil {
		t.Fatal("RunContainer with a missing image: no error")
	}
	if !errors.Is(err, orchestra.ErrImageNotFound) {
		t.Errorf("error does not wrap orchestra.ErrImageNotFound: %v", err)
	}
	if !strings.Contains(err.Error(), img) {
		t.Errorf("error does not name the image %q: %v", img, err)
	}
	if _, err := d.findTask(ctx, "missing"); !errors.Is(err, orchestra.ErrContainerNotFound) {
		t.Errorf("a failed RunContainer left a container: %v", err)
	}
}

func TestBareImageMeansLatest(t *testing.T) {
	for _, tt := range []struct{ in, canonical, familiar string }{
		{"busybox", "docker.io/library/busybox:latest", "busybox:latest"},
		{"busybox:1.36", "docker.io/library/busybox:1.36", "busybox:1.36"},
		{"example.com:5000/team/app", "example.com:5000/team/app:latest", "example.com:5000/team/app:latest"},
	} {
		c, f, err := normalizeImage(tt.in)
		if err != nil || c != tt.canonical || f != tt.familiar {
			t.Errorf("normalizeImage(%q) = %q, %q, %v; want %q, %q", tt.in, c, f, err, tt.canonical, tt.familiar)
		}
	}
	if _, _, err := normalizeImage("no spaces allowed"); !errors.Is(err, orchestra.ErrInvalidTask) {
		t.Errorf("normalizeImage of an invalid reference: %v, want ErrInvalidTask", err)
	}
}

// TestNewInstanceFindsContainer runs a task in one instance and finds it
// from a second one of the namespace: by its ID (GetContainer), and by its
// task ID (RunContainer again does not run the command again). A third
// instance of another namespace does not find it.
func TestNewInstanceFindsContainer(t *testing.T) {
	d1, ns := newTestDriver(t, "find")
	ctx := testContext(t)
	task := orchestra.Task{
		ID: "once", Image: testImage,
		Command: []string{"sh", "-c", "echo x >> ./data/count; sleep 1"},
		Mounts:  orchestra.Mounts{{Name: "counter", Path: "/data"}},
	}
	c1, err := d1.RunContainer(ctx, task)
	if err != nil {
		t.Fatal(err)
	}

	// A second instance, as after a plugin restart: nothing in memory.
	d2, err := New(ns, Config{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	found, err := d2.GetContainer(ctx, c1.ID())
	if err != nil {
		t.Fatalf("GetContainer from a new instance: %v", err)
	}
	c2, err := d2.RunContainer(ctx, task)
	if err != nil {
		t.Fatal(err)
	}
	if found.ID() != c1.ID() || c2.ID() != c1.ID() {
		t.Fatalf("new instance got containers %s and %s, want %s", found.ID(), c2.ID(), c1.ID())
	}
	if st := testkit.MustWaitDone(t, found, 2*time.Minute); st.ExitCode() != 0 {
		t.Fatalf("exit %d", st.ExitCode())
	}
	r := testkit.MustRunToEnd(t, ctx, d2, orchestra.Task{
		ID: "read", Image: testImage, Command: []string{"cat", "./data/count"},
		Mounts: orchestra.Mounts{{Name: "counter", Path: "/data"}},
	})
	if string(r.Stdout) != "x\n" {
		t.Fatalf("the command ran more than once: count file %q", string(r.Stdout))
	}

	other, _ := newTestDriver(t, "find-other")
	if _, err := other.GetContainer(ctx, c1.ID()); !errors.Is(err, orchestra.ErrContainerNotFound) {
		t.Errorf("GetContainer of another namespace's container: %v, want ErrContainerNotFound", err)
	}
	if err := found.Cleanup(ctx); err != nil {
		t.Fatalf("Cleanup through the found handle: %v", err)
	}
	if _, err := d1.GetContainer(ctx, c1.ID()); !errors.Is(err, orchestra.ErrContainerNotFound) {
		t.Errorf("GetContainer after Cleanup by another instance: %v, want ErrContainerNotFound", err)
	}
	if err := d2.Close(); err != nil {
		t.Fatalf("Close of the second instance: %v", err)
	}
}

// TestGetContainerRefusesOtherIDs checks that only full container IDs of
// the namespace are found: not a task ID, a name, an ID prefix, upper case
// or an unknown ID.
func TestGetContainerRefusesOtherIDs(t *testing.T) {
	d, ns := newTestDriver(t, "ids")
	ctx := testContext(t)
	r := testkit.MustRunToEnd(t, ctx, d, orchestra.Task{ID: "known", Image: testImage, Command: []string{"true"}})
	id := r.Container.ID()
	// A fresh instance asks the engine, not its memory.
	fresh, err := New(ns, Config{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	for _, bad := range []string{"", "known", containerName(ns, "known"), id[:12], strings.ToUpper(id), strings.Repeat("0", 64), id + "0"} {
		if _, err := fresh.GetContainer(ctx, bad); !errors.Is(err, orchestra.ErrContainerNotFound) {
			t.Errorf("GetContainer(%q): %v, want ErrContainerNotFound", bad, err)
		}
	}
	c, err := fresh.GetContainer(ctx, id)
	if err != nil {
		t.Fatalf("GetContainer(%q): %v", id, err)
	}
	if c.ID() != id {
		t.Errorf("found container has ID %q, want %q", c.ID(), id)
	}
}

func TestCloseRemovesEverything(t *testing.T) {
	d, ns := newTestDriver(t, "close")
	ctx := testContext(t)
	if _, err := d.RunContainer(ctx, orchestra.Task{
		ID: "sleeper", Image: testImage, Command: []string{"sleep", "300"},
		Mounts: orchestra.Mounts{{Name: "implicit", Path: "/data"}},
	}); err != nil {
		t.Fatal(err)
	}
	r := testkit.MustRunToEnd(t, ctx, d, orchestra.Task{ID: "done", Image: testImage, Command: []string{"true"}})
	if r.ExitCode != 0 {
		t.Fatalf("true: exit %d", r.ExitCode)
	}
	if _, err := d.CreateVolume(ctx, "explicit", 0); err != nil {
		t.Fatal(err)
	}
	left, err := Leaks(ctx, Config{}, ns)
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 4 {
		t.Fatalf("before Close, want 2 containers and 2 volumes, got %v", left)
	}
	start := time.Now()
	if err := d.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	t.Logf("Close took %s", time.Since(start))
	if left, err := Leaks(ctx, Config{}, ns); err != nil || len(left) != 0 {
		t.Fatalf("after Close: %v, %v", left, err)
	}
	if err := d.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := d.RunContainer(ctx, orchestra.Task{ID: "late", Image: testImage, Command: []string{"true"}}); !errors.Is(err, orchestra.ErrClosed) {
		t.Fatalf("RunContainer after Close: %v, want ErrClosed", err)
	}
}

// countingReader produces n bytes without holding them. After the first
// MiB it blocks until release is closed, so RunContainer cannot have
// returned because the input was already consumed.
type countingReader struct {
	n, read  int64
	release  chan struct{}
	released atomic.Bool
}

func (r *countingReader) Read(p []byte) (int, error) {
	if r.read >= r.n {
		return 0, io.EOF
	}
	if r.read >= 1<<20 && !r.released.Load() {
		<-r.release
		r.released.Store(true)
	}
	if int64(len(p)) > r.n-r.read {
		p = p[:r.n-r.read]
	}
	for i := range p {
		p[i] = byte('a' + (r.read+int64(i))%26)
	}
	r.read += int64(len(p))
	return len(p), nil
}

func TestLargeStdin(t *testing.T) {
	d, _ := newTestDriver(t, "stdin")
	ctx := testContext(t)
	const size = 100 << 20
	in := &countingReader{n: size, release: make(chan struct{})}
	runCtx, cancel := context.WithCancel(ctx)
	type ret struct {
		c   orchestra.Container
		err error
	}
	done := make(chan ret, 1)
	start := time.Now()
	go func() {
		c, err := d.RunContainer(runCtx, orchestra.Task{ID: "wc", Image: testImage, Command: []string{"wc", "-c"}, Stdin: in})
		done <- ret{c, err}
	}()
	var r ret
	select {
	case r = <-done:
	case <-time.After(time.Minute):
		close(in.release)
		t.Fatal("RunContainer did not return while stdin was still flowing")
	}
	returned := time.Since(start)
	// The copy must not depend on RunContainer's context.
	cancel()
	close(in.release)
	if r.err != nil {
		t.Fatal(r.err)
	}
	st := testkit.MustWaitDone(t, r.c, 2*time.Minute)
	var out, errb bytes.Buffer
	if err := r.c.Logs(ctx, &out, &errb, false); err != nil {
		t.Fatal(err)
	}
	t.Logf("RunContainer returned after %s; 100 MiB through wc -c in %s", returned, time.Since(start))
	if st.ExitCode() != 0 || strings.TrimSpace(out.String()) != strconv.Itoa(size) {
		t.Fatalf("wc -c of 100 MiB: exit %d stdout %q stderr %q", st.ExitCode(), out.String(), errb.String())
	}
}

func TestNoStdinMeansEOF(t *testing.T) {
	d, _ := newTestDriver(t, "nostdin")
	ctx := testContext(t)
	r := testkit.MustRunToEnd(t, ctx, d, orchestra.Task{ID: "cat", Image: testImage, Command: []string{"cat"}})
	if r.ExitCode != 0 || string(r.Stdout) != "" {
		t.Fatalf("cat without stdin: exit %d stdout %q", r.ExitCode, string(r.Stdout))
	}
}

func TestFollowLogs(t *testing.T) {
	d, _ := newTestDriver(t, "follow")
	ctx := testContext(t)
	c, err := d.RunContainer(ctx, orchestra.Task{ID: "follow", Image: testImage,
		Command: []string{"sh", "-c", "echo first; sleep 1; echo second >&2; echo third"}})
	if err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	start := time.Now()
	if err := c.Logs(ctx, &out, &errb, true); err != nil {
		t.Fatal(err)
	}
	if out.String() != "first\nthird\n" || errb.String() != "second\n" {
		t.Fatalf("Logs with follow: stdout %q stderr %q", out.String(), errb.String())
	}
	if elapsed := time.Since(start); elapsed < 900*time.Millisecond {
		t.Errorf("Logs with follow returned after %s, before the command could have finished", elapsed)
	}
	st, err := c.Status(ctx)
	if err != nil || !st.IsDone() {
		t.Fatalf("after Logs with follow returned the container is not done: %v %v", st, err)
	}
	// Following a finished container gives everything and returns.
	out.Reset()
	errb.Reset()
	if err := c.Logs(ctx, &out, &errb, true); err != nil || out.String() != "first\nthird\n" || errb.String() != "second\n" {
		t.Fatalf("Logs with follow after exit: %v stdout %q stderr %q", err, out.String(), errb.String())
	}
}

func TestCommandNotFound(t *testing.T) {
	d, _ := newTestDriver(t, "notfound")
	ctx := testContext(t)
	r := testkit.MustRunToEnd(t, ctx, d, orchestra.Task{ID: "nope", Image: testImage, Command: []string{"no-such-command"}})
	if r.ExitCode != 127 || !strings.Contains(string(r.Stderr), "no-such-command") {
		t.Fatalf("command not found: exit %d stderr %q", r.ExitCode, string(r.Stderr))
	}
}

func TestRunReturnsAtOnceAndCleanupKills(t *testing.T) {
	d, _ := newTestDriver(t, "cleanup")
	ctx := testContext(t)
	start := time.Now()
	c, err := d.RunContainer(ctx, orchestra.Task{ID: "sleep", Image: testImage, Command: []string{"sleep", "60"}})
	if err != nil {
		t.Fatal(err)
	}
	if elapsed := time.Since(start); elapsed > 20*time.Second {
		t.Fatalf("RunContainer took %s", elapsed)
	}
	st, err := c.Status(ctx)
	if err != nil || st.IsDone() {
		t.Fatalf("sleep 60 is done right after start: %v %v", st, err)
	}
	for i := range 2 {
		if err := c.Cleanup(ctx); err != nil {
			t.Fatalf("Cleanup #%d: %v", i+1, err)
		}
	}
	st, err = c.Status(ctx)
	if err != nil || !st.IsDone() || st.ExitCode() != 137 {
		t.Fatalf("status after Cleanup of a running task: %v %v, want done 137", st, err)
	}
	if err := c.Logs(ctx, io.Discard, io.Discard, false); !errors.Is(err, orchestra.ErrContainerNotFound) {
		t.Errorf("Logs after Cleanup: %v, want ErrContainerNotFound", err)
	}
}

func TestLogsCompleteRightAfterExit(t *testing.T) {
	d, _ := newTestDriver(t, "flush")
	ctx := testContext(t)
	// Output at full speed until the very end, on both streams, then exit:
	// Logs right after Status says done must have all of it.
	cmd := "seq 1 40000; seq 1 20000 >&2; echo last"
	var want, wantErr strings.Builder
	for i := 1; i <= 40000; i++ {
		fmt.Fprintf(&want, "%d\n", i)
	}
	want.WriteString("last\n")
	for i := 1; i <= 20000; i++ {
		fmt.Fprintf(&wantErr, "%d\n", i)
	}
	for i := range 3 {
		r := testkit.MustRunToEnd(t, ctx, d, orchestra.Task{ID: fmt.Sprintf("flush-%d", i), Image: testImage, Command: []string{"sh", "-c", cmd}})
		if string(r.Stdout) != want.String() || string(r.Stderr) != wantErr.String() {
			t.Fatalf("run %d: stdout %d bytes (want %d), stderr %d bytes (want %d)", i, len(string(r.Stdout)), want.Len(), len(string(r.Stderr)), wantErr.Len())
		}
		var out, errb bytes.Buffer
		if err := r.Container.Logs(ctx, &out, &errb, false); err != nil || out.String() != string(r.Stdout) || errb.String() != string(r.Stderr) {
			t.Fatalf("run %d: second Logs differs: %v", i, err)
		}
	}
}

func TestVolumeIdempotentAndCleanup(t *testing.T) {
	d, ns := newTestDriver(t, "vol")
	ctx := testContext(t)
	v1, err := d.CreateVolume(ctx, "data/with:odd chars", 0)
	if err != nil {
		t.Fatal(err)
	}
	v2, err := d.CreateVolume(ctx, "data/with:odd chars", 0)
	if err != nil {
		t.Fatal(err)
	}
	if v1.Name() != "data/with:odd chars" || v2.Name() != v1.Name() {
		t.Fatalf("volume names %q %q", v1.Name(), v2.Name())
	}
	info, err := d.client.VolumeInspect(ctx, volumeName(ns, v1.Name()))
	if err != nil {
		t.Fatal(err)
	}
	if v1.Path() == "" || v1.Path() != info.Mountpoint || v2.Path() != v1.Path() {
		t.Fatalf("Volume.Path() %q and %q, want the engine's Mountpoint %q", v1.Path(), v2.Path(), info.Mountpoint)
	}
	left, err := Leaks(ctx, Config{}, ns)
	if err != nil || len(left) != 1 {
		t.Fatalf("after creating one volume twice: %v %v", left, err)
	}
	for i := range 2 {
		if err := v1.Cleanup(ctx); err != nil {
			t.Fatalf("Cleanup #%d: %v", i+1, err)
		}
	}
	if left, err := Leaks(ctx, Config{}, ns); err != nil || len(left) != 0 {
		t.Fatalf("after volume Cleanup: %v %v", left, err)
	}
}

func TestEnvExact(t *testing.T) {
	t.Setenv("POCKETCI_HOST_SECRET", "leak")
	d, _ := newTestDriver(t, "env")
	ctx := testContext(t)
	r := testkit.MustRunToEnd(t, ctx, d, orchestra.Task{ID: "env", Image: testImage, Command: []string{"env"},
		Env: map[string]string{"A": "1", "B": "x=y z"}})
	if !strings.Contains(string(r.Stdout), "\nA=1\n") && !strings.HasPrefix(string(r.Stdout), "A=1\n") {
		t.Errorf("A=1 missing: %q", string(r.Stdout))
	}
	if !strings.Contains(string(r.Stdout), "B=x=y z\n") {
		t.Errorf("B missing: %q", string(r.Stdout))
	}
	if !strings.Contains(string(r.Stdout), "PATH=/") {
		t.Errorf("the image's PATH is missing: %q", string(r.Stdout))
	}
	if strings.Contains(string(r.Stdout), "POCKETCI_HOST_SECRET") {
		t.Errorf("host environment leaked: %q", string(r.Stdout))
	}
}

package k8s

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"

	"github.com/jtarchie/pocketci/orchestra"
)

// TestOutputStreamsAndExitCode: stdout and stderr come back apart, with the
// exit code, and the final partial line is kept.
func TestOutputStreamsAndExitCode(t *testing.T) {
	ctx := testContext(t)
	d := newTestDriver(t, newNamespace("streams"))
	r := runToEnd(ctx, t, d, orchestra.Task{ID: "streams", Image: testImage,
		Command: []string{"sh", "-c", "echo out; echo err >&2; printf partial; printf tail >&2; exit 3"}})
	if r.exitCode != 3 || r.stdout != "out\npartial" || r.stderr != "err\ntail" {
		t.Fatalf("got exit %d stdout %q stderr %q; want 3 %q %q", r.exitCode, r.stdout, r.stderr, "out\npartial", "err\ntail")
	}
}

// TestOOMKilledIs137: a task the kernel kills for memory exits 137.
func TestOOMKilledIs137(t *testing.T) {
	ctx := testContext(t)
	d := newTestDriver(t, newNamespace("oom"))
	r := runToEnd(ctx, t, d, orchestra.Task{ID: "oom", Image: testImage,
		ContainerLimits: orchestra.ContainerLimits{Memory: 16 << 20},
		// tail holds the whole newline-free input in memory.
		Command: []string{"sh", "-c", "head -c 200m /dev/zero | tail"}})
	if r.exitCode != 137 {
		t.Fatalf("exit code %d, want 137 (stderr %q)", r.exitCode, r.stderr)
	}
}

// TestMissingImage: an image the node does not have and cannot pull is an
// error wrapping ErrImageNotFound that names the image.
func TestMissingImage(t *testing.T) {
	ctx := testContext(t)
	d := newTestDriver(t, newNamespace("noimage"))
	// A registry on a closed local port: the pull fails at once, offline.
	const img = "127.0.0.1:9/pocketci/missing:1"
	c, err := d.RunContainer(ctx, orchestra.Task{ID: "noimage", Image: img, Command: []string{"true"}})
	if err != nil {
		t.Fatalf("RunContainer: %v", err)
	}
	for {
		st, err := c.Status(ctx)
		if err != nil {
			if !errors.Is(err, orchestra.ErrImageNotFound) || !strings.Contains(err.Error(), img) {
				t.Fatalf("Status error %v: want one wrapping ErrImageNotFound naming %s", err, img)
			}
			return
		}
		if st.IsDone() {
			t.Fatalf("a task whose image is missing is done with exit %d", st.ExitCode())
		}
		select {
		case <-ctx.Done():
			t.Fatal("no ErrImageNotFound before the deadline")
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// liveWriter records writes and signals the first one.
type liveWriter struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	first chan struct{}
	once  sync.Once
}

func (w *liveWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.once.Do(func() { close(w.first) })
	return w.buf.Write(p)
}

func (w *liveWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// TestFollowLogsLive: output arrives while the task runs, and the follow
// ends after exit with everything, the final partial line included.
func TestFollowLogsLive(t *testing.T) {
	ctx := testContext(t)
	d := newTestDriver(t, newNamespace("follow"))
	c, err := d.RunContainer(ctx, orchestra.Task{ID: "follow", Image: testImage,
		Command: []string{"sh", "-c", "echo first; echo e1 >&2; sleep 3; printf last"}})
	if err != nil {
		t.Fatal(err)
	}
	out := &liveWriter{first: make(chan struct{})}
	var errb bytes.Buffer
	done := make(chan error, 1)
	go func() { done <- c.Logs(ctx, out, &errb, true) }()
	select {
	case <-out.first:
	case err := <-done:
		t.Fatalf("Logs (follow) returned %v before any output", err)
	case <-ctx.Done():
		t.Fatal("no output while the task runs")
	}
	st, err := c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.IsDone() {
		t.Fatal("the first output arrived only after the task was done: not live")
	}
	if err := <-done; err != nil {
		t.Fatalf("Logs (follow): %v", err)
	}
	if out.String() != "first\nlast" || errb.String() != "e1\n" {
		t.Fatalf("followed stdout %q stderr %q; want %q %q", out.String(), errb.String(), "first\nlast", "e1\n")
	}
	if st := waitDone(ctx, t, c); st.ExitCode() != 0 {
		t.Fatalf("exit %d", st.ExitCode())
	}
}

// TestFailingStdinIsNotEOF: when the stdin reader fails, the task does not
// see a clean end of input and does not report success: Status reports the
// failure.
func TestFailingStdinIsNotEOF(t *testing.T) {
	ctx := testContext(t)
	d := newTestDriver(t, newNamespace("stdinfail"))
	c, err := d.RunContainer(ctx, orchestra.Task{ID: "stdin-fails", Image: testImage,
		Stdin:   io.MultiReader(bytes.NewReader(bytes.Repeat([]byte("x"), 100000)), iotest.ErrReader(errors.New("injected stdin failure"))),
		Command: []string{"sh", "-c", "wc -c; echo got-eof"}})
	if err != nil {
		t.Fatal(err)
	}
	for {
		st, err := c.Status(ctx)
		if err != nil {
			if !strings.Contains(err.Error(), "injected stdin failure") {
				t.Fatalf("Status error %v does not name the stdin failure", err)
			}
			break
		}
		if st.IsDone() {
			var out bytes.Buffer
			_ = c.Logs(ctx, &out, io.Discard, false)
			t.Fatalf("the task finished (exit %d, stdout %q) on a stdin that failed", st.ExitCode(), out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	// It stays failed.
	if _, err := c.Status(ctx); err == nil {
		t.Fatal("Status went from failed to fine")
	}
}

// TestStdinStreamed: a large stdin goes through whole (streamed, not held).
func TestStdinStreamed(t *testing.T) {
	ctx := testContext(t)
	d := newTestDriver(t, newNamespace("stdinbig"))
	const size = 64 << 20
	r := runToEnd(ctx, t, d, orchestra.Task{ID: "stdin-big", Image: testImage,
		Stdin:   io.LimitReader(zeros{}, size),
		Command: []string{"wc", "-c"}})
	if r.exitCode != 0 || strings.TrimSpace(r.stdout) != strconv.Itoa(size) {
		t.Fatalf("exit %d stdout %q, want 0 and %d", r.exitCode, r.stdout, size)
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// TestSameIDAcrossDrivers: a second driver instance (as another host would
// make) returns the first one's pod for the same task ID without running
// it again, and finds it by its container ID.
func TestSameIDAcrossDrivers(t *testing.T) {
	ctx := testContext(t)
	ns := newNamespace("twohosts")
	a := newTestDriver(t, ns)
	b, err := New(ns, Config{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	task := orchestra.Task{ID: "Once_Only/ü", Image: testImage, Command: []string{"sh", "-c", "echo $RANDOM$$-ran"}}
	first := runToEnd(ctx, t, a, task)
	second := runToEnd(ctx, t, b, task)
	if first.stdout != second.stdout || !strings.HasSuffix(first.stdout, "-ran\n") {
		t.Fatalf("second driver ran the task again or lost it: %q vs %q", first.stdout, second.stdout)
	}
	if first.container.ID() != second.container.ID() {
		t.Fatalf("the two drivers' containers have IDs %q and %q", first.container.ID(), second.container.ID())
	}
	found, err := b.GetContainer(ctx, first.container.ID())
	if err != nil {
		t.Fatalf("GetContainer from the second driver: %v", err)
	}
	var out bytes.Buffer
	if err := found.Logs(ctx, &out, io.Discard, false); err != nil || out.String() != first.stdout {
		t.Fatalf("found container logs %q, %v", out.String(), err)
	}
	if _, err := b.GetContainer(ctx, "never-ran"); !errors.Is(err, orchestra.ErrContainerNotFound) {
		t.Fatalf("GetContainer of an unknown task: %v, want ErrContainerNotFound", err)
	}
}

// TestNamesAndLabels: awkward namespaces and IDs give valid pod names and
// label values; the exact values are in annotations.
func TestNamesAndLabels(t *testing.T) {
	ctx := testContext(t)
	ns := newNamespace("Names_" + strings.Repeat("N", 40))
	d := newTestDriver(t, ns)
	ids := []string{"-starts-with-dash", "UPPER_case.and/slash", strings.Repeat("long", 30), "ends-"}
	for _, id := range ids {
		r := runToEnd(ctx, t, d, orchestra.Task{ID: id, Image: testImage, Command: []string{"echo", "ok"}})
		if r.stdout != "ok\n" {
			t.Fatalf("task %q: stdout %q", id, r.stdout)
		}
	}
	client := kubernetes.NewForConfigOrDie(d.cfg.rest)
	pods, err := client.CoreV1().Pods(d.cfg.k8sNamespace).List(ctx, metav1.ListOptions{LabelSelector: namespaceSelector(ns)})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, p := range pods.Items {
		if errs := validation.IsDNS1123Label(p.Name); len(errs) > 0 {
			t.Errorf("pod name %q: %v", p.Name, errs)
		}
		for k, v := range p.Labels {
			if errs := validation.IsValidLabelValue(v); len(errs) > 0 {
				t.Errorf("label %s=%q: %v", k, v, errs)
			}
		}
		if p.Annotations[LabelNamespace] != ns {
			t.Errorf("pod %s: namespace annotation %q, want %q", p.Name, p.Annotations[LabelNamespace], ns)
		}
		got[p.Annotations[LabelTaskID]] = true
	}
	for _, id := range ids {
		if !got[id] {
			t.Errorf("no pod annotated with task ID %q", id)
		}
	}
}

// TestDollarsStayLiteral: Kubernetes expands $(VAR) and $$ in args and env
// values; the driver escapes them so the task gets its bytes unchanged.
func TestDollarsStayLiteral(t *testing.T) {
	ctx := testContext(t)
	d := newTestDriver(t, newNamespace("dollars"))
	const lit = `$(HOME) $$ $ $(X`
	r := runToEnd(ctx, t, d, orchestra.Task{ID: "dollars", Image: testImage,
		Env:     map[string]string{"V": lit, "HOME": "/h"},
		Command: []string{"sh", "-c", `printf '%s|%s' "$V" "$1"`, "sh", lit}})
	if want := lit + "|" + lit; r.exitCode != 0 || r.stdout != want {
		t.Fatalf("exit %d stdout %q, want %q", r.exitCode, r.stdout, want)
	}
}

// TestTaskSettings: user, privileged, limits, environment and relative
// mounts reach the container.
func TestTaskSettings(t *testing.T) {
	ctx := testContext(t)
	d := newTestDriver(t, newNamespace("settings"))
	tests := []struct {
		name string
		task orchestra.Task
		want string
	}{
		{"numeric user", orchestra.Task{User: "1000", Command: []string{"id", "-u"}}, "1000\n"},
		{"user and group", orchestra.Task{User: "1000:2000", Command: []string{"sh", "-c", "id -u; id -g"}}, "1000\n2000\n"},
		{"root", orchestra.Task{User: "root", Command: []string{"id", "-u"}}, "0\n"},
		{"privileged has CAP_SYS_ADMIN", orchestra.Task{Privileged: true, Command: []string{"sh", "-c", capSysAdmin}}, "yes\n"},
		{"unprivileged lacks CAP_SYS_ADMIN", orchestra.Task{Command: []string{"sh", "-c", capSysAdmin}}, "no\n"},
		{"memory limit", orchestra.Task{ContainerLimits: orchestra.ContainerLimits{Memory: 64 << 20},
			Command: []string{"cat", "/sys/fs/cgroup/memory/memory.limit_in_bytes"}}, "67108864\n"},
		{"cpu shares to millicores", orchestra.Task{ContainerLimits: orchestra.ContainerLimits{CPU: 512},
			Command: []string{"cat", "/sys/fs/cgroup/cpu/cpu.cfs_quota_us"}}, "50000\n"},
		{"relative mount under the working dir", orchestra.Task{Mounts: orchestra.Mounts{{Name: "rel", Path: "data/in"}},
			Command: []string{"sh", "-c", "echo hi > ./data/in/f && cat /data/in/f && pwd"}}, "hi\n/\n"},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.task.ID = fmt.Sprintf("settings-%d", i)
			tc.task.Image = testImage
			r := runToEnd(ctx, t, d, tc.task)
			if r.exitCode != 0 || r.stdout != tc.want {
				t.Fatalf("exit %d stdout %q stderr %q, want 0 %q", r.exitCode, r.stdout, r.stderr, tc.want)
			}
		})
	}
}

// capSysAdmin prints yes when CAP_SYS_ADMIN (bit 21) is effective.
const capSysAdmin = `eff=$(sed -n 's/^CapEff:\t*//p' /proc/self/status); if [ $(( 0x$eff >> 21 & 1 )) = 1 ]; then echo yes; else echo no; fi`

// TestRefusedUsers: a user name Kubernetes cannot resolve is refused
// before anything is created.
func TestRefusedUsers(t *testing.T) {
	ctx := testContext(t)
	d := newTestDriver(t, newNamespace("users"))
	for _, u := range []string{"nobody", "1000:staff", "-1"} {
		_, err := d.RunContainer(ctx, orchestra.Task{ID: "u-" + u, Image: testImage, User: u, Command: []string{"true"}})
		if !errors.Is(err, orchestra.ErrInvalidTask) || !strings.Contains(err.Error(), u) {
			t.Errorf("User %q: %v, want ErrInvalidTask naming it", u, err)
		}
	}
}

// TestCloseRemovesEverything: Close deletes running pods and volumes, and
// the cluster has nothing of the namespace left (checked by newTestDriver).
func TestCloseRemovesEverything(t *testing.T) {
	ctx := testContext(t)
	d := newTestDriver(t, newNamespace("close"))
	if _, err := d.CreateVolume(ctx, "kept", 0); err != nil {
		t.Fatal(err)
	}
	if _, err := d.CreateVolume(ctx, "kept", 0); err != nil {
		t.Fatalf("CreateVolume again: %v", err)
	}
	c, err := d.RunContainer(ctx, orchestra.Task{ID: "sleeper", Image: testImage,
		Mounts: orchestra.Mounts{{Name: "kept", Path: "/kept"}}, Command: []string{"sleep", "600"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.(*Container).waitStarted(ctx); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := d.RunContainer(ctx, orchestra.Task{ID: "late", Image: testImage, Command: []string{"true"}}); !errors.Is(err, orchestra.ErrClosed) {
		t.Fatalf("RunContainer after Close: %v, want ErrClosed", err)
	}
}

package docker

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"

	"github.com/jtarchie/pocketci/orchestra"
)

// startTestSandbox starts a sandbox of busybox in d; Close removes it.
func startTestSandbox(ctx context.Context, t *testing.T, d *Driver, task orchestra.Task) *Sandbox {
	t.Helper()
	if task.Image == "" {
		task.Image = testImage
	}
	sb, err := d.StartSandbox(ctx, task)
	if err != nil {
		t.Fatalf("StartSandbox: %v", err)
	}
	return sb.(*Sandbox)
}

type execResult struct {
	code           int
	stdout, stderr string
	err            error
}

func execIn(ctx context.Context, sb orchestra.Sandbox, stdin io.Reader, env map[string]string, dir string, cmd ...string) execResult {
	var out, errb bytes.Buffer
	st, err := sb.Exec(ctx, cmd, env, dir, stdin, &out, &errb)
	r := execResult{stdout: out.String(), stderr: errb.String(), err: err}
	if st != nil {
		r.code = st.ExitCode()
	}
	return r
}

// TestSandboxExec checks what an Exec sees and returns, case by case.
func TestSandboxExec(t *testing.T) {
	d, _ := newTestDriver(t, "sbx")
	ctx := testContext(t)
	sb := startTestSandbox(ctx, t, d, orchestra.Task{
		ID: "exec", Env: map[string]string{"TASK_VAR": "from-task"}, WorkDir: "work",
		Mounts: orchestra.Mounts{{Name: "data", Path: "data"}},
	})
	long := strings.Repeat("x", 100<<10)
	cases := []struct {
		name           string
		cmd            []string
		env            map[string]string
		dir            string
		stdin          io.Reader
		code           int
		stdout, stderr string
		stderrHas      string
	}{
		{name: "default dir and task env", cmd: []string{"sh", "-c", "pwd; echo $TASK_VAR"}, stdout: "/work\nfrom-task\n"},
		{name: "per-call env and relative dir", cmd: []string{"sh", "-c", "pwd; echo $A$TASK_VAR"}, env: map[string]string{"A": "a-", "TASK_VAR": "over"}, dir: "data", stdout: "/data\na-over\n"},
		{name: "mount is there", cmd: []string{"sh", "-c", "echo in > /data/f && cat /data/f"}, stdout: "in\n"},
		{name: "streams apart", cmd: []string{"sh", "-c", "printf o1; printf e1 >&2; printf o2; printf e2 >&2"}, stdout: "o1o2", stderr: "e1e2"},
		{name: "long line without newline", cmd: []string{"sh", "-c", "head -c 102400 /dev/zero | tr '\\0' x"}, stdout: long},
		{name: "binary stdin round trip", cmd: []string{"cat"}, stdin: strings.NewReader("\x00\xff\n\x01"), stdout: "\x00\xff\n\x01"},
		{name: "exit code", cmd: []string{"sh", "-c", "exit 3"}, code: 3},
		{name: "SIGTERM", cmd: []string{"sh", "-c", "kill -TERM $$"}, code: 143},
		{name: "command not found", cmd: []string{"no-such-command"}, code: 127, stderrHas: "no-such-command"},
		{name: "not executable", cmd: []string{"/etc"}, code: 126, stderrHas: "permission denied"},
		{name: "marker is set", cmd: []string{"sh", "-c", "test -n \"$" + ExecMarkerEnv + "\""}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := execIn(ctx, sb, c.stdin, c.env, c.dir, c.cmd...)
			if r.err != nil {
				t.Fatalf("Exec: %v", r.err)
			}
			if r.code != c.code || r.stdout != c.stdout || (c.stderrHas == "" && r.stderr != c.stderr) || !strings.Contains(r.stderr, c.stderrHas) {
				t.Fatalf("exit %d, stdout %.80q, stderr %.200q; want %d, %.80q, %q (or containing %q)", r.code, r.stdout, r.stderr, c.code, c.stdout, c.stderr, c.stderrHas)
			}
		})
	}
}

// TestSandboxCancelKillsTree checks that cancelling an Exec kills its
// command and every descendant (a background job, a setsid daemon), while
// another Exec beside it goes on.
func TestSandboxCancelKillsTree(t *testing.T) {
	d, _ := newTestDriver(t, "sbc")
	ctx := testContext(t)
	sb := startTestSandbox(ctx, t, d, orchestra.Task{ID: "cancel"})
	cctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var cancelled execResult
	wg.Add(2)
	go func() {
		defer wg.Done()
		cancelled = execIn(cctx, sb, nil, nil, "", "sh", "-c", "sleep 301 & setsid sleep 302 & echo started; sleep 303")
	}()
	var beside execResult
	go func() {
		defer wg.Done()
		beside = execIn(ctx, sb, nil, nil, "", "sh", "-c", "sleep 2; echo beside")
	}()
	time.Sleep(700 * time.Millisecond)
	start := time.Now()
	cancel()
	wg.Wait()
	if !errors.Is(cancelled.err, context.Canceled) {
		t.Fatalf("cancelled Exec: %+v; want an error wrapping context.Canceled", cancelled)
	}
	if beside.err != nil || beside.stdout != "beside\n" {
		t.Fatalf("Exec beside: %+v", beside)
	}
	t.Logf("cancelled Exec returned %v after cancel (with the other one waited for)", time.Since(start))
	r := execIn(ctx, sb, nil, nil, "", "sh", "-c", "ps -o args | grep '^sleep 30' || true")
	if r.err != nil || r.stdout != "" {
		t.Fatalf("after cancel, processes left: %+v", r)
	}
}

// TestSandboxLifecycle checks Cleanup during an Exec, Exec after Cleanup,
// Stdin refused, and that Close removes sandboxes.
func TestSandboxLifecycle(t *testing.T) {
	d, ns := newTestDriver(t, "sbl")
	ctx := testContext(t)
	if _, err := d.StartSandbox(ctx, orchestra.Task{ID: "in", Image: testImage, Stdin: strings.NewReader("")}); !errors.Is(err, orchestra.ErrInvalidTask) || !strings.Contains(err.Error(), "Stdin") {
		t.Fatalf("StartSandbox with Stdin: %v; want ErrInvalidTask naming Stdin", err)
	}
	sb := startTestSandbox(ctx, t, d, orchestra.Task{ID: "life", User: "1234"})
	if r := execIn(ctx, sb, nil, nil, "", "id", "-u"); r.err != nil || r.stdout != "1234\n" {
		t.Fatalf("User: %+v", r)
	}
	done := make(chan execResult, 1)
	go func() { done <- execIn(ctx, sb, nil, nil, "", "sleep", "300") }()
	time.Sleep(500 * time.Millisecond)
	if err := sb.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	if r := <-done; r.err == nil {
		t.Fatalf("Exec during Cleanup: %+v; want an error", r)
	}
	if r := execIn(ctx, sb, nil, nil, "", "true"); !errors.Is(r.err, orchestra.ErrContainerNotFound) {
		t.Fatalf("Exec after Cleanup: %v", r.err)
	}
	if err := sb.Cleanup(ctx); err != nil {
		t.Fatalf("second Cleanup: %v", err)
	}
	left := startTestSandbox(ctx, t, d, orchestra.Task{ID: "left"})
	if _, err := d.GetContainer(ctx, left.ID()); !errors.Is(err, orchestra.ErrContainerNotFound) {
		t.Fatalf("GetContainer of a sandbox: %v; want ErrContainerNotFound", err)
	}
	info, err := d.client.ContainerInspect(ctx, left.ID())
	if err != nil || info.Config.Labels[LabelNamespace] != ns || !*info.HostConfig.Init || info.State.Status != container.StateRunning {
		t.Fatalf("sandbox container: %v %+v", err, info.State)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if r := execIn(ctx, left, nil, nil, "", "true"); !errors.Is(r.err, orchestra.ErrClosed) {
		t.Fatalf("Exec after Close: %v", r.err)
	}
}

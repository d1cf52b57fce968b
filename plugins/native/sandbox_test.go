//go:build linux

package native

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"github.com/jtarchie/pocketci/orchestra/conformance/testkit"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jtarchie/pocketci/orchestra"
)

func startSandbox(t *testing.T, d orchestra.Driver, task orchestra.Task) orchestra.Sandbox {
	t.Helper()
	sb, err := d.(orchestra.SandboxDriver).StartSandbox(t.Context(), task)
	if err != nil {
		t.Fatalf("StartSandbox: %v", err)
	}
	t.Cleanup(func() {
		if err := sb.Cleanup(context.Background()); err != nil {
			t.Errorf("Cleanup: %v", err)
		}
	})
	return sb
}

type execResult struct {
	code        int
	out, errOut string
	err         error
}

func execIn(ctx context.Context, sb orchestra.Sandbox, env map[string]string, dir string, stdin io.Reader, cmd ...string) execResult {
	var out, errb bytes.Buffer
	st, err := sb.Exec(ctx, cmd, env, dir, stdin, &out, &errb)
	r := execResult{out: out.String(), errOut: errb.String(), err: err}
	if st != nil {
		r.code = st.ExitCode()
	}
	return r
}

// TestSandboxExec runs pocketci's sandbox expectations and native's own in
// one sandbox, in turn: each step sees what the ones before left.
func TestSandboxExec(t *testing.T) {
	useRoot(t)
	d := newDriver(t, "sandbox-exec")
	sb := startSandbox(t, d, orchestra.Task{ID: "sb", Env: map[string]string{"BASE": "b", "GREET": "base"},
		Mounts: orchestra.Mounts{{Name: "data", Path: "data"}, {Name: "cache", Path: "data/cache"}}})
	hostFile := filepath.Join(os.TempDir(), fmt.Sprintf("native-sandbox-%d.txt", os.Getpid()))
	t.Cleanup(func() { _ = os.Remove(hostFile) })
	tests := []struct {
		name    string
		env     map[string]string
		dir     string
		stdin   io.Reader
		cmd     []string
		code    int
		out     string
		errPart string
	}{
		{"env and absolute workDir", map[string]string{"GREET": "hello"}, "/tmp", nil,
			[]string{"sh", "-c", "echo $GREET $BASE && pwd && echo kept > " + hostFile}, 0, "hello b\n/tmp\n", ""},
		{"env is per call; files stay", nil, "", nil, []string{"sh", "-c", "echo $GREET; cat " + hostFile}, 0, "base\nkept\n", ""},
		{"relative workDir is created in the sandbox", nil, "sub/dir", nil, []string{"sh", "-c", "pwd; echo in > f"}, 0, "", ""},
		{"default workDir is work/", nil, "", nil, []string{"cat", "sub/dir/f"}, 0, "in\n", ""},
		{"mounts, nested too", nil, "", nil, []string{"sh", "-c", "echo d > data/d && echo c > data/cache/c"}, 0, "", ""},
		{"absolute workDir in a mount is the mount", nil, "/data/cache", nil, []string{"cat", "c"}, 0, "c\n", ""},
		{"stdin", nil, "", strings.NewReader("in\n"), []string{"tr", "a-z", "A-Z"}, 0, "IN\n", ""},
		{"exit code", nil, "", nil, []string{"sh", "-c", "echo oops >&2; exit 3"}, 3, "", "oops"},
		{"signal", nil, "", nil, []string{"sh", "-c", "kill -TERM $$"}, 143, "", ""},
		{"command not found", nil, "", nil, []string{"no-such-command-xyz"}, 127, "", "no-such-command-xyz: command not found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := execIn(t.Context(), sb, tt.env, tt.dir, tt.stdin, tt.cmd...)
			if r.err != nil || r.code != tt.code || (tt.out != "" && r.out != tt.out) || !strings.Contains(r.errOut, tt.errPart) {
				t.Fatalf("exit %d, stdout %q, stderr %q, err %v; want %d, %q, stderr with %q", r.code, r.out, r.errOut, r.err, tt.code, tt.out, tt.errPart)
			}
		})
	}
	vols := filepath.Join(Root(), "sandbox-exec", "volumes")
	for _, f := range []string{"data/d", "cache/c"} {
		if _, err := os.Stat(filepath.Join(vols, f)); err != nil {
			t.Errorf("volume file %s: %v", f, err)
		}
	}
	if _, err := os.Stat(filepath.Join(vols, "data", "cache", "c")); err == nil {
		t.Error("a file of the inner mount was written into the outer volume")
	}
}

// TestSandboxRefusals checks errors of StartSandbox and Exec that name what
// is wrong.
func TestSandboxRefusals(t *testing.T) {
	useRoot(t)
	d := newDriver(t, "sandbox-refuse")
	sd := d.(orchestra.SandboxDriver)
	for _, tt := range []struct {
		task orchestra.Task
		want string
	}{
		{orchestra.Task{ID: "s", Stdin: strings.NewReader("x")}, "Stdin"},
		{orchestra.Task{ID: "s", Mounts: orchestra.Mounts{{Name: "a", Path: "/a"}, {Name: "b", Path: "a"}}}, "Mounts[0].Path"},
		{orchestra.Task{ID: "s", WorkDir: "../up"}, "WorkDir"},
		{orchestra.Task{ID: ""}, "task ID"},
	} {
		if _, err := sd.StartSandbox(t.Context(), tt.task); err == nil || !strings.Contains(err.Error(), tt.want) || !errors.Is(err, orchestra.ErrInvalidTask) {
			t.Errorf("StartSandbox(%+v): %v; want ErrInvalidTask naming %s", tt.task, err, tt.want)
		}
	}
	sb := startSandbox(t, d, orchestra.Task{ID: "s"})
	for _, tt := range []struct {
		cmd  []string
		env  map[string]string
		dir  string
		want string
	}{
		{nil, nil, "", "Command is empty"},
		{[]string{"true"}, map[string]string{"A=B": "x"}, "", "Env key"},
		{[]string{"true"}, nil, "a/../../b", "WorkDir"},
	} {
		r := execIn(t.Context(), sb, tt.env, tt.dir, nil, tt.cmd...)
		if r.err == nil || !strings.Contains(r.err.Error(), tt.want) {
			t.Errorf("Exec(%q, %v, %q): %v; want an error naming %s", tt.cmd, tt.env, tt.dir, r.err, tt.want)
		}
	}
	if r := execIn(t.Context(), sb, nil, "/no/such/dir", nil, "true"); r.err == nil || !strings.Contains(r.err.Error(), "/no/such/dir") {
		t.Errorf("Exec in a missing host directory: %v; want an error naming it", r.err)
	}
}

// TestSandboxStreamsAndCancels checks that output arrives while the command
// runs, and that cancelling the Exec kills its whole tree, also a child in a
// session of its own.
func TestSandboxStreamsAndCancels(t *testing.T) {
	useRoot(t)
	d := newDriver(t, "sandbox-cancel")
	sb := startSandbox(t, d, orchestra.Task{ID: "s"})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	w := &signalWriter{want: "first\n", seen: make(chan struct{})}
	done := make(chan error, 1)
	go func() {
		_, err := sb.Exec(ctx, []string{"sh", "-c", "setsid sleep 300 & echo first; sleep 300"}, nil, "", nil, w, w)
		done <- err
	}()
	select {
	case <-w.seen:
	case <-time.After(20 * time.Second):
		t.Fatal("the first line did not arrive while the command ran")
	}
	start := time.Now()
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled Exec: %v; want an error wrapping context.Canceled", err)
		}
	case <-time.After(killWait):
		t.Fatal("a cancelled Exec did not return")
	}
	t.Logf("cancel to return: %v", time.Since(start))
	if left, err := processesUnder(filepath.Join(Root(), "sandbox-cancel")); err != nil || len(left) > 0 {
		t.Fatalf("processes left after a cancelled Exec: %v, %v", left, err)
	}
}

// failingReader fails after its data.
type failingReader struct{ data io.Reader }

func (r *failingReader) Read(p []byte) (int, error) {
	n, err := r.data.Read(p)
	if errors.Is(err, io.EOF) {
		return n, errors.New("reader broke on purpose")
	}
	return n, err
}

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("writer broke on purpose") }

// TestSandboxStreamFailures checks that a failed stdin or output kills the
// command and fails the Exec, naming the stream.
func TestSandboxStreamFailures(t *testing.T) {
	useRoot(t)
	d := newDriver(t, "sandbox-streams")
	sb := startSandbox(t, d, orchestra.Task{ID: "s"})
	// cat would exit 0 at a clean EOF: it must be killed instead.
	_, err := sb.Exec(t.Context(), []string{"cat"}, nil, "", &failingReader{strings.NewReader("part")}, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "stdin") || !strings.Contains(err.Error(), "broke on purpose") {
		t.Errorf("Exec with a failing stdin: %v; want an error naming stdin and the reader's error", err)
	}
	start := time.Now()
	_, err = sb.Exec(t.Context(), []string{"sh", "-c", "echo x; sleep 300"}, nil, "", nil, failingWriter{}, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "output lost: write stdout") {
		t.Errorf("Exec with a failing stdout: %v; want output lost", err)
	}
	if time.Since(start) > killWait {
		t.Errorf("the command ran on after its output failed (%v)", time.Since(start))
	}
}

// TestSandboxCleanupAndClose checks that Cleanup and Close kill running
// commands and leave nothing, and that Exec afterwards is an error.
func TestSandboxCleanupAndClose(t *testing.T) {
	useRoot(t)
	d, err := open("sandbox-close", testkit.Logger(t, slog.LevelWarn))
	if err != nil {
		t.Fatal(err)
	}
	sd := d.(orchestra.SandboxDriver)
	var errs [2]chan error
	for i := range errs {
		sb, err := sd.StartSandbox(t.Context(), orchestra.Task{ID: "s"})
		if err != nil {
			t.Fatal(err)
		}
		errs[i] = make(chan error, 1)
		go func() {
			_, err := sb.Exec(context.Background(), []string{"sh", "-c", "sleep 300 & sleep 300"}, nil, "", nil, io.Discard, io.Discard)
			errs[i] <- err
		}()
		if i == 0 {
			time.Sleep(300 * time.Millisecond)
			for range 2 {
				if err := sb.Cleanup(t.Context()); err != nil {
					t.Fatalf("Cleanup: %v", err)
				}
			}
			if r := execIn(t.Context(), sb, nil, "", nil, "true"); !errors.Is(r.err, orchestra.ErrContainerNotFound) {
				t.Fatalf("Exec after Cleanup: %v; want ErrContainerNotFound", r.err)
			}
		}
	}
	time.Sleep(300 * time.Millisecond)
	if err := d.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	for i, ch := range errs {
		if err := <-ch; err == nil || !strings.Contains(err.Error(), "cleaned up") {
			t.Errorf("Exec %d killed by Cleanup/Close: %v; want an error saying so", i, err)
		}
	}
	if left, err := Leaks("sandbox-close"); err != nil || len(left) > 0 {
		t.Fatalf("left after Close: %v, %v", left, err)
	}
	if _, err := sd.StartSandbox(t.Context(), orchestra.Task{ID: "late"}); !errors.Is(err, orchestra.ErrClosed) {
		t.Fatalf("StartSandbox after Close: %v; want ErrClosed", err)
	}
}

// TestSandboxConcurrentExecs runs several Execs at once with one writer for
// both streams (run with -race).
func TestSandboxConcurrentExecs(t *testing.T) {
	useRoot(t)
	d := newDriver(t, "sandbox-many")
	sb := startSandbox(t, d, orchestra.Task{ID: "s"})
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var both bytes.Buffer
			st, err := sb.Exec(t.Context(), []string{"sh", "-c", fmt.Sprintf("for j in 1 2 3; do echo out%d; echo err%d >&2; done", i, i)}, nil, "", nil, &both, &both)
			if err != nil || st.ExitCode() != 0 || strings.Count(both.String(), fmt.Sprintf("out%d\n", i)) != 3 || strings.Count(both.String(), fmt.Sprintf("err%d\n", i)) != 3 {
				t.Errorf("Exec %d: %v, %q", i, err, both.String())
			}
		}()
	}
	wg.Wait()
}

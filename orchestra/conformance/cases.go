package conformance

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/jtarchie/pocketci/orchestra"
	"github.com/jtarchie/pocketci/orchestra/conformance/testkit"
)

// Cases returns every conformance case, in the order they run.
func Cases() []Case {
	return []Case{
		{Name: "happy path", Fn: caseHappyPath},
		{Name: "exit code failed", Fn: caseExitCodeFailed},
		{Name: "volume", Fn: caseVolume},
		{Name: "environment variables", Fn: caseEnvironmentVariables},
		{Name: "with stdin", Fn: caseWithStdin},
		{Name: "stderr separate", Fn: caseStderrSeparate},
		{Name: "same task id runs once", Fn: caseSameTaskIDRunsOnce},
		{Name: "logs repeated", Fn: caseLogsRepeated},
		{Name: "large output", Fn: caseLargeOutput},
		{Name: "binary stdin", Fn: caseBinaryStdin},
		{Name: "exit codes", Fn: caseExitCodes},
		{Name: "parallel tasks", Fn: caseParallelTasks},
		{Name: "shared volume", Fn: caseSharedVolume},
		{Name: "cleanup twice", Fn: caseCleanupTwice},
		{Name: "close twice", Fn: caseCloseTwice},
		{Name: "status after done is stable", Fn: caseStatusStable},
		{Name: "awkward task ids", Fn: caseAwkwardTaskIDs},
		{Name: "relative mount shared", Fn: caseRelativeMountShared},
		{Name: "stdin through dev stdin", Fn: caseStdinDevice},
		{Name: "no final newline logs", Fn: caseNoFinalNewlineLogs},
		{Name: "no final newline follow", Fn: caseNoFinalNewlineFollow},
		{Name: "stream order", Fn: caseStreamOrder},
		{Name: "kill self", Fn: caseKillSelf},
		{Name: "failing stdin", Fn: caseFailingStdin},
		{Name: "cleanup kills descendants", Fn: caseCleanupKillsDescendants},
		{Name: "only standard descriptors", Fn: caseOnlyStandardDescriptors},
		{Name: "container id finds it again", Fn: caseContainerID},
		{Name: "unknown container id", Fn: caseUnknownContainer},
		{Name: "volume in a second instance", Fn: caseVolumeSecondInstance},
		{Name: "volume path", Fn: caseVolumePath},
		{Name: "workdir", Fn: caseWorkDir},
		{Name: "nested mounts", Fn: caseNestedMounts},
		{Name: "command not found", Fn: caseCommandNotFound},
		{Name: "size and cpu kind hints", Fn: caseTaskHints},
		{Name: "volume data round trip", Fn: caseVolumeDataRoundTrip},
		{Name: "volume data refuses escapes", Fn: caseVolumeDataRefusesEscapes},
		{Name: "sandbox keeps state", Fn: caseSandboxState},
		{Name: "sandbox exit codes and stdin", Fn: caseSandboxExitCodes},
		{Name: "sandbox concurrent and cancel", Fn: caseSandboxConcurrentCancel},
		{Name: "sandbox cleanup", Fn: caseSandboxCleanup},
	}
}

// logs returns everything c wrote to stdout and stderr.
func logs(ctx context.Context, c orchestra.Container) (stdout, stderr []byte, err error) {
	var out, errb bytes.Buffer
	if err := c.Logs(ctx, &out, &errb, false); err != nil {
		return nil, nil, fmt.Errorf("logs: %w", err)
	}
	return out.Bytes(), errb.Bytes(), nil
}

// result is what running a task to completion gave.
type result = testkit.Result

// runToEnd runs task on the case's driver to its end.
func runToEnd(ctx context.Context, env *Env, task orchestra.Task) (result, error) {
	return testkit.RunToEnd(ctx, env.Driver, task)
}

// task builds a task with the run's image.
func task(env *Env, id string, command ...string) orchestra.Task {
	return orchestra.Task{ID: id, Image: env.Options.Image, Command: command}
}

// show quotes b for an error message, trimming it when it is long.
func show(b []byte) string {
	const limit = 512
	if len(b) <= limit {
		return strconv.Quote(string(b))
	}
	return fmt.Sprintf("%s... (%d bytes in all)", strconv.Quote(string(b[:limit])), len(b))
}

// expect checks exit code, stdout and stderr of r. A nil want for stderr
// means stderr is not checked.
func expect(id string, r result, code int, stdout string, stderr *string) error {
	var problems []string
	if r.ExitCode != code {
		problems = append(problems, fmt.Sprintf("exit code: expected %d, got %d", code, r.ExitCode))
	}
	if string(r.Stdout) != stdout {
		problems = append(problems, fmt.Sprintf("stdout: expected %s, got %s", show([]byte(stdout)), show(r.Stdout)))
	}
	if stderr != nil && string(r.Stderr) != *stderr {
		problems = append(problems, fmt.Sprintf("stderr: expected %s, got %s", show([]byte(*stderr)), show(r.Stderr)))
	}
	if len(problems) > 0 {
		return fmt.Errorf("task %q: %s (stdout %s, stderr %s)", id, strings.Join(problems, "; "), show(r.Stdout), show(r.Stderr))
	}
	return nil
}

func ptr(s string) *string { return &s }

func caseHappyPath(ctx context.Context, env *Env) error {
	r, err := runToEnd(ctx, env, task(env, "happy-path", "echo", "hello"))
	if err != nil {
		return err
	}
	return expect("happy-path", r, 0, "hello\n", ptr(""))
}

func caseExitCodeFailed(ctx context.Context, env *Env) error {
	r, err := runToEnd(ctx, env, task(env, "exit-code-failed", "sh", "-c", "exit 1"))
	if err != nil {
		return err
	}
	return expect("exit-code-failed", r, 1, "", nil)
}

func caseVolume(ctx context.Context, env *Env) error {
	mounts := orchestra.Mounts{{Name: "test-volume", Path: "/test"}}
	w := task(env, "volume-write", "sh", "-c", "echo world > ./test/hello")
	w.Mounts = mounts
	r, err := runToEnd(ctx, env, w)
	if err != nil {
		return err
	}
	if err := expect(w.ID, r, 0, "", nil); err != nil {
		return err
	}
	rd := task(env, "volume-read", "cat", "./test/hello")
	rd.Mounts = mounts
	r, err = runToEnd(ctx, env, rd)
	if err != nil {
		return err
	}
	return expect(rd.ID, r, 0, "world\n", nil)
}

// platformEnv names variables a platform may set on its own; they are not a
// leak of the host's environment.
var platformEnv = map[string]bool{
	"PATH": true, "HOME": true, "HOSTNAME": true, "PWD": true, "SHLVL": true,
	"TERM": true, "USER": true, "LOGNAME": true, "container": true, "_": true,
}

func caseEnvironmentVariables(ctx context.Context, env *Env) error {
	vars := map[string]string{
		"CT_SIMPLE": "value",
		"CT_SPACES": "hello  world with spaces",
		"CT_EQUALS": "a=b=c",
		"CT_QUOTES": `it's "quoted" $HOME`,
		"CT_EMPTY":  "",
	}
	t := task(env, "environment-variables", "env")
	t.Env = vars
	r, err := runToEnd(ctx, env, t)
	if err != nil {
		return err
	}
	if r.ExitCode != 0 {
		return fmt.Errorf("task %q: exit code: expected 0, got %d (stderr %s)", t.ID, r.ExitCode, show(r.Stderr))
	}
	lines := map[string]bool{}
	names := map[string]bool{}
	for _, line := range strings.Split(string(r.Stdout), "\n") {
		lines[line] = true
		if name, _, ok := strings.Cut(line, "="); ok {
			names[name] = true
		}
	}
	keys := make([]string, 0, len(vars))
	for k := range vars {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		want := k + "=" + vars[k]
		if !lines[want] {
			return fmt.Errorf("task %q: expected a line %q in the output of env, got %s", t.ID, want, show(r.Stdout))
		}
	}
	var leaked []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if name == "" || platformEnv[name] {
			continue
		}
		if _, ours := vars[name]; ours {
			continue
		}
		if names[name] {
			leaked = append(leaked, name)
		}
	}
	if len(leaked) > 0 {
		sort.Strings(leaked)
		return fmt.Errorf("task %q: host environment leaked into the task: %v (env output %s)", t.ID, leaked, show(r.Stdout))
	}
	return nil
}

func caseWithStdin(ctx context.Context, env *Env) error {
	t := task(env, "with-stdin", "cat")
	t.Stdin = strings.NewReader("hello stdin")
	r, err := runToEnd(ctx, env, t)
	if err != nil {
		return err
	}
	return expect(t.ID, r, 0, "hello stdin", nil)
}

func caseStderrSeparate(ctx context.Context, env *Env) error {
	r, err := runToEnd(ctx, env, task(env, "stderr-separate", "sh", "-c", "echo out; echo err >&2"))
	if err != nil {
		return err
	}
	return expect("stderr-separate", r, 0, "out\n", ptr("err\n"))
}

func caseSameTaskIDRunsOnce(ctx context.Context, env *Env) error {
	mounts := orchestra.Mounts{{Name: "counter", Path: "/data"}}
	t := task(env, "same-id", "sh", "-c", "echo x >> ./data/count; echo ran")
	t.Mounts = mounts
	first, err := env.Driver.RunContainer(ctx, t)
	if err != nil {
		return fmt.Errorf("first RunContainer: %w", err)
	}
	second, err := env.Driver.RunContainer(ctx, t)
	if err != nil {
		return fmt.Errorf("second RunContainer (same ID, while the first may run): %w", err)
	}
	st1, err := testkit.WaitDone(ctx, first)
	if err != nil {
		return fmt.Errorf("first handle: %w", err)
	}
	st2, err := testkit.WaitDone(ctx, second)
	if err != nil {
		return fmt.Errorf("second handle: %w", err)
	}
	third, err := env.Driver.RunContainer(ctx, t)
	if err != nil {
		return fmt.Errorf("third RunContainer (same ID, after done): %w", err)
	}
	st3, err := testkit.WaitDone(ctx, third)
	if err != nil {
		return fmt.Errorf("third handle: %w", err)
	}
	if st1.ExitCode() != 0 || st2.ExitCode() != 0 || st3.ExitCode() != 0 {
		return fmt.Errorf("exit codes of the three handles: expected 0 0 0, got %d %d %d", st1.ExitCode(), st2.ExitCode(), st3.ExitCode())
	}
	for i, c := range []orchestra.Container{first, second, third} {
		out, errb, err := logs(ctx, c)
		if err != nil {
			return fmt.Errorf("handle %d: %w", i+1, err)
		}
		if string(out) != "ran\n" || len(errb) != 0 {
			return fmt.Errorf("handle %d logs: expected stdout \"ran\\n\" and empty stderr, got stdout %s stderr %s", i+1, show(out), show(errb))
		}
	}
	rd := task(env, "same-id-read", "cat", "./data/count")
	rd.Mounts = mounts
	r, err := runToEnd(ctx, env, rd)
	if err != nil {
		return err
	}
	if r.ExitCode != 0 || string(r.Stdout) != "x\n" {
		return fmt.Errorf("the command of task %q ran more than once or not at all: expected the counter file to hold \"x\\n\", got %s (exit %d, stderr %s)", t.ID, show(r.Stdout), r.ExitCode, show(r.Stderr))
	}
	return nil
}

func caseLogsRepeated(ctx context.Context, env *Env) error {
	r, err := runToEnd(ctx, env, task(env, "logs-repeated", "sh", "-c", "echo one; echo two >&2; echo three"))
	if err != nil {
		return err
	}
	if err := expect("logs-repeated", r, 0, "one\nthree\n", ptr("two\n")); err != nil {
		return err
	}
	for i := 2; i <= 3; i++ {
		out, errb, err := logs(ctx, r.Container)
		if err != nil {
			return fmt.Errorf("call %d: %w", i, err)
		}
		if !bytes.Equal(out, r.Stdout) || !bytes.Equal(errb, r.Stderr) {
			return fmt.Errorf("Logs call %d differs from call 1: expected stdout %s stderr %s, got stdout %s stderr %s",
				i, show(r.Stdout), show(r.Stderr), show(out), show(errb))
		}
	}
	return nil
}

// largeOutputSize is how many bytes of stdout "large output" asks for.
const largeOutputSize = 8 << 20

func caseLargeOutput(ctx context.Context, env *Env) error {
	// seq 1 2000000 writes about 14.9 MB; head keeps the first 8 MiB.
	const n = 2000000
	var want bytes.Buffer
	want.Grow(largeOutputSize + 16)
	for i := 1; want.Len() < largeOutputSize; i++ {
		want.WriteString(strconv.Itoa(i))
		want.WriteByte('\n')
	}
	expected := want.Bytes()[:largeOutputSize]
	cmd := fmt.Sprintf("seq 1 %d | head -c %d", n, largeOutputSize)
	r, err := runToEnd(ctx, env, task(env, "large-output", "sh", "-c", cmd))
	if err != nil {
		return err
	}
	if r.ExitCode != 0 {
		return fmt.Errorf("task %q: exit code: expected 0, got %d (stderr %s)", "large-output", r.ExitCode, show(r.Stderr))
	}
	if !bytes.Equal(r.Stdout, expected) {
		gotSum := sha256.Sum256(r.Stdout)
		wantSum := sha256.Sum256(expected)
		at := firstDiff(r.Stdout, expected)
		return fmt.Errorf("task %q: stdout: expected %d bytes with sha256 %s, got %d bytes with sha256 %s (first difference at byte %d)",
			"large-output", len(expected), hex.EncodeToString(wantSum[:]), len(r.Stdout), hex.EncodeToString(gotSum[:]), at)
	}
	if len(r.Stderr) != 0 {
		return fmt.Errorf("task %q: stderr: expected empty, got %s", "large-output", show(r.Stderr))
	}
	return nil
}

// firstDiff returns the index of the first byte where a and b differ.
func firstDiff(a, b []byte) int {
	n := min(len(a), len(b))
	for i := range n {
		if a[i] != b[i] {
			return i
		}
	}
	return n
}

func caseBinaryStdin(ctx context.Context, env *Env) error {
	in := make([]byte, 0, 256*256)
	for range 256 {
		for b := range 256 {
			in = append(in, byte(b))
		}
	}
	t := task(env, "binary-stdin", "cat")
	t.Stdin = bytes.NewReader(in)
	r, err := runToEnd(ctx, env, t)
	if err != nil {
		return err
	}
	if r.ExitCode != 0 {
		return fmt.Errorf("task %q: exit code: expected 0, got %d (stderr %s)", t.ID, r.ExitCode, show(r.Stderr))
	}
	if !bytes.Equal(r.Stdout, in) {
		return fmt.Errorf("task %q: stdout: expected the %d stdin bytes back unchanged, got %d bytes, first difference at byte %d",
			t.ID, len(in), len(r.Stdout), firstDiff(r.Stdout, in))
	}
	return nil
}

func caseExitCodes(ctx context.Context, env *Env) error {
	for _, code := range []int{0, 1, 3, 255} {
		id := fmt.Sprintf("exit-%d", code)
		r, err := runToEnd(ctx, env, task(env, id, "sh", "-c", fmt.Sprintf("exit %d", code)))
		if err != nil {
			return err
		}
		if r.ExitCode != code {
			return fmt.Errorf("task %q: exit code: expected %d, got %d (stderr %s)", id, code, r.ExitCode, show(r.Stderr))
		}
	}
	return nil
}

// parallelTasks is how many tasks "parallel tasks" runs at once.
const parallelTasks = 20

func caseParallelTasks(ctx context.Context, env *Env) error {
	var wg sync.WaitGroup
	errs := make([]error, parallelTasks)
	for i := range parallelTasks {
		wg.Go(func() {
			id := fmt.Sprintf("parallel-%d", i)
			r, err := runToEnd(ctx, env, task(env, id, "echo", fmt.Sprintf("task-%d", i)))
			if err != nil {
				errs[i] = err
				return
			}
			errs[i] = expect(id, r, 0, fmt.Sprintf("task-%d\n", i), ptr(""))
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

func caseSharedVolume(ctx context.Context, env *Env) error {
	v, err := env.Driver.CreateVolume(ctx, "shared", 0)
	if err != nil {
		return fmt.Errorf("create volume: %w", err)
	}
	if v.Name() != "shared" {
		return fmt.Errorf("volume name: expected %q, got %q", "shared", v.Name())
	}
	again, err := env.Driver.CreateVolume(ctx, "shared", 0)
	if err != nil {
		return fmt.Errorf("create the same volume again: %w", err)
	}
	if again.Name() != "shared" {
		return fmt.Errorf("volume name on the second CreateVolume: expected %q, got %q", "shared", again.Name())
	}
	for _, w := range []struct{ id, file string }{{"shared-a", "a"}, {"shared-b", "b"}} {
		t := task(env, w.id, "sh", "-c", fmt.Sprintf("echo from-%s > ./shared/%s", w.file, w.file))
		t.Mounts = orchestra.Mounts{{Name: "shared", Path: "/shared"}}
		r, err := runToEnd(ctx, env, t)
		if err != nil {
			return err
		}
		if err := expect(t.ID, r, 0, "", nil); err != nil {
			return err
		}
	}
	// The reader mounts the same volume at another path.
	rd := task(env, "shared-read", "cat", "./elsewhere/a", "./elsewhere/b")
	rd.Mounts = orchestra.Mounts{{Name: "shared", Path: "/elsewhere"}}
	r, err := runToEnd(ctx, env, rd)
	if err != nil {
		return err
	}
	return expect(rd.ID, r, 0, "from-a\nfrom-b\n", nil)
}

func caseCleanupTwice(ctx context.Context, env *Env) error {
	t := task(env, "cleanup-twice", "echo", "bye")
	t.Mounts = orchestra.Mounts{{Name: "cleanup-volume", Path: "/data"}}
	r, err := runToEnd(ctx, env, t)
	if err != nil {
		return err
	}
	if err := expect(t.ID, r, 0, "bye\n", nil); err != nil {
		return err
	}
	for i := 1; i <= 2; i++ {
		if err := r.Container.Cleanup(ctx); err != nil {
			return fmt.Errorf("container Cleanup call %d: expected nil, got %w", i, err)
		}
	}
	v, err := env.Driver.CreateVolume(ctx, "cleanup-volume", 0)
	if err != nil {
		return fmt.Errorf("create volume: %w", err)
	}
	for i := 1; i <= 2; i++ {
		if err := v.Cleanup(ctx); err != nil {
			return fmt.Errorf("volume Cleanup call %d: expected nil, got %w", i, err)
		}
	}
	return nil
}

func caseCloseTwice(ctx context.Context, env *Env) error {
	t := task(env, "close-twice", "echo", "hi")
	t.Mounts = orchestra.Mounts{{Name: "close-volume", Path: "/data"}}
	r, err := runToEnd(ctx, env, t)
	if err != nil {
		return err
	}
	if err := expect(t.ID, r, 0, "hi\n", nil); err != nil {
		return err
	}
	for i := 1; i <= 2; i++ {
		if err := env.Driver.Close(); err != nil {
			return fmt.Errorf("Close call %d: expected nil, got %w", i, err)
		}
	}
	return nil
}

func caseStatusStable(ctx context.Context, env *Env) error {
	r, err := runToEnd(ctx, env, task(env, "status-stable", "sh", "-c", "exit 3"))
	if err != nil {
		return err
	}
	if r.ExitCode != 3 {
		return fmt.Errorf("task %q: exit code: expected 3, got %d", "status-stable", r.ExitCode)
	}
	for i := range 50 {
		st, err := r.Container.Status(ctx)
		if err != nil {
			return fmt.Errorf("Status call %d after done: %w", i+2, err)
		}
		if !st.IsDone() || st.ExitCode() != 3 {
			return fmt.Errorf("Status call %d after done: expected done with exit code 3, got done=%v exit code %d", i+2, st.IsDone(), st.ExitCode())
		}
	}
	return nil
}

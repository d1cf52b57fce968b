package conformance

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jtarchie/pocketci/orchestra"
	"github.com/jtarchie/pocketci/orchestra/conformance/testkit"
)

// caseKillSelf: a task that kills itself with SIGKILL exits 137 on every
// platform (a task that is PID 1 without an init would ignore the signal).
func caseKillSelf(ctx context.Context, env *Env) error {
	r, err := runToEnd(ctx, env, task(env, "kill-self", "sh", "-c", "kill -9 $$; echo survived"))
	if err != nil {
		return err
	}
	return expect("kill-self", r, 137, "", nil)
}

// errStdinReader is what failingStdin returns after its bytes.
var errStdinReader = errors.New("conformance: the caller's stdin reader failed on purpose")

// failingStdin gives a few bytes, then fails.
type failingStdin struct{ sent bool }

func (f *failingStdin) Read(p []byte) (int, error) {
	if !f.sent {
		f.sent = true
		return copy(p, "partial input"), nil
	}
	return 0, errStdinReader
}

// caseFailingStdin: when the caller's stdin reader fails, the task must not
// take it for the end of its input and succeed. Accepted: a RunContainer,
// Status or Logs error that names stdin, or a non-zero exit code.
func caseFailingStdin(ctx context.Context, env *Env) error {
	t := task(env, "failing-stdin", "sh", "-c", "cat; echo saw-end-of-input")
	t.Stdin = &failingStdin{}
	c, err := env.Driver.RunContainer(ctx, t)
	if err != nil {
		if strings.Contains(err.Error(), "stdin") {
			return nil
		}
		return fmt.Errorf("task %q: run container: the error does not name stdin: %w", t.ID, err)
	}
	st, err := testkit.WaitDone(ctx, c)
	if err != nil {
		if strings.Contains(err.Error(), "stdin") {
			return nil
		}
		return fmt.Errorf("task %q: %w", t.ID, err)
	}
	out, errb, logsErr := logs(ctx, c)
	if logsErr != nil && strings.Contains(logsErr.Error(), "stdin") {
		return nil
	}
	if st.ExitCode() == 0 {
		return fmt.Errorf("task %q: the stdin reader failed, yet the task exited 0 (stdout %s, stderr %s, Logs error %v): it took the failure for the end of its input",
			t.ID, show(out), show(errb), logsErr)
	}
	return nil
}

// heartbeat is a shell loop that counts into ./beat/<name> forever.
func heartbeat(name string) string {
	return fmt.Sprintf(`i=0; while :; do i=$((i+1)); echo $i > ./beat/%s; sleep 0.1; done`, name)
}

// caseCleanupKillsDescendants starts two descendants that leave the task's
// process group and session (setsid, and a job under set -m), each beating
// a counter into a volume, then cleans the task up while it runs. A reader
// task sees the counters move before Cleanup and stand still after it.
func caseCleanupKillsDescendants(ctx context.Context, env *Env) error {
	mounts := orchestra.Mounts{{Name: "beat", Path: "/beat"}}
	script := fmt.Sprintf(`setsid sh -c '%s' & (set -m; sh -c '%s' & ) ; sleep 1; echo started; sleep 1000`,
		heartbeat("setsid"), heartbeat("setm"))
	t := task(env, "descendants", "sh", "-c", script)
	t.Mounts = mounts
	c, err := env.Driver.RunContainer(ctx, t)
	if err != nil {
		return fmt.Errorf("task %q: run container: %w", t.ID, err)
	}
	for {
		out, _, err := logs(ctx, c)
		if err != nil {
			return fmt.Errorf("task %q: %w", t.ID, err)
		}
		if string(out) == "started\n" {
			break
		}
		if st, err := c.Status(ctx); err != nil {
			return fmt.Errorf("task %q: status: %w", t.ID, err)
		} else if st.IsDone() {
			return fmt.Errorf("task %q ended (exit code %d) before it printed \"started\"; it should run until Cleanup", t.ID, st.ExitCode())
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("task %q never printed \"started\": %w", t.ID, ctx.Err())
		case <-time.After(testkit.PollInterval):
		}
	}
	// The first reader prints "moving" per counter that changes within 20 s
	// (a loaded machine may start the descendants late); the second prints
	// "still" per counter that stays the same for 2 s.
	moving := `for f in setsid setm; do a=$(cat ./beat/$f 2>/dev/null); r="$f still"; for i in $(seq 100); do sleep 0.2; b=$(cat ./beat/$f 2>/dev/null); if [ -n "$b" ] && [ "$a" != "$b" ]; then r="$f moving"; break; fi; done; echo "$r"; done`
	probe := `for f in setsid setm; do a=$(cat ./beat/$f); sleep 2; b=$(cat ./beat/$f); if [ "$a" != "$b" ]; then echo "$f moving"; else echo "$f still"; fi; done`
	before := task(env, "descendants-before", "sh", "-c", moving)
	before.Mounts = mounts
	r, err := runToEnd(ctx, env, before)
	if err != nil {
		return err
	}
	if string(r.Stdout) != "setsid moving\nsetm moving\n" {
		return fmt.Errorf("before Cleanup, the descendants' counters should move: got %s (stderr %s); the case proves nothing", show(r.Stdout), show(r.Stderr))
	}
	if err := c.Cleanup(ctx); err != nil {
		return fmt.Errorf("task %q: Cleanup of the running task: %w", t.ID, err)
	}
	after := task(env, "descendants-after", "sh", "-c", probe)
	after.Mounts = mounts
	r, err = runToEnd(ctx, env, after)
	if err != nil {
		return err
	}
	if string(r.Stdout) != "setsid still\nsetm still\n" {
		return fmt.Errorf("after Cleanup of task %q, its descendants still run: the reader says %s", t.ID, show(r.Stdout))
	}
	return nil
}

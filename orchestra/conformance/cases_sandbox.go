package conformance

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/jtarchie/pocketci/orchestra"
)

// sandbox starts a sandbox in the run's image, or skips the case when the
// driver has none. Its Cleanup is the caller's.
func sandbox(ctx context.Context, env *Env, id string) (orchestra.Sandbox, error) {
	sd, ok := env.Driver.(orchestra.SandboxDriver)
	if !ok {
		return nil, skip("the driver does not implement orchestra.SandboxDriver")
	}
	sb, err := sd.StartSandbox(ctx, orchestra.Task{ID: id, Image: env.Options.Image})
	if err != nil {
		return nil, fmt.Errorf("start sandbox %q: %w", id, err)
	}
	return sb, nil
}

// execOut runs cmd in sb and returns its exit code and output.
func execOut(ctx context.Context, sb orchestra.Sandbox, stdin io.Reader, envVars map[string]string, dir string, cmd ...string) (int, string, string, error) {
	var out, errb bytes.Buffer
	st, err := sb.Exec(ctx, cmd, envVars, dir, stdin, &out, &errb)
	if err != nil {
		return 0, out.String(), errb.String(), fmt.Errorf("exec %q: %w", cmd, err)
	}
	return st.ExitCode(), out.String(), errb.String(), nil
}

// caseSandboxState checks that a sandbox keeps its files between Execs,
// while env and workDir are per call.
func caseSandboxState(ctx context.Context, env *Env) error {
	sb, err := sandbox(ctx, env, "sandbox-state")
	if err != nil {
		return err
	}
	defer sb.Cleanup(context.WithoutCancel(ctx))
	steps := []struct {
		cmd       []string
		env       map[string]string
		dir, want string
	}{
		{[]string{"sh", "-c", "echo kept > /tmp/ct-sandbox-file && echo $GREET && pwd"}, map[string]string{"GREET": "hey"}, "/tmp", "hey\n/tmp\n"},
		{[]string{"sh", "-c", "cat /tmp/ct-sandbox-file; echo \"[$GREET]\"; rm /tmp/ct-sandbox-file"}, nil, "", "kept\n[]\n"},
	}
	for _, s := range steps {
		code, out, errOut, err := execOut(ctx, sb, nil, s.env, s.dir, s.cmd...)
		if err != nil {
			return err
		}
		if code != 0 || out != s.want {
			return fmt.Errorf("exec %q: exit %d, stdout %q (stderr %q); want 0 and %q", s.cmd, code, out, errOut, s.want)
		}
	}
	return nil
}

// caseSandboxExitCodes checks real exit codes, 128+N for a signal, and
// stdin streamed in.
func caseSandboxExitCodes(ctx context.Context, env *Env) error {
	sb, err := sandbox(ctx, env, "sandbox-codes")
	if err != nil {
		return err
	}
	defer sb.Cleanup(context.WithoutCancel(ctx))
	for cmd, want := range map[string]int{"exit 42": 42, "kill -9 $$": 137, "true": 0} {
		code, _, _, err := execOut(ctx, sb, nil, nil, "", "sh", "-c", cmd)
		if err != nil {
			return err
		}
		if code != want {
			return fmt.Errorf("exec %q: exit %d, want %d", cmd, code, want)
		}
	}
	code, out, _, err := execOut(ctx, sb, strings.NewReader("piped in"), nil, "", "cat")
	if err != nil || code != 0 || out != "piped in" {
		return fmt.Errorf("cat with stdin: exit %d, stdout %q, %v; want the input back", code, out, err)
	}
	return nil
}

// caseSandboxConcurrentCancel checks that two Execs run at once, and that
// cancelling one kills its command only.
func caseSandboxConcurrentCancel(ctx context.Context, env *Env) error {
	sb, err := sandbox(ctx, env, "sandbox-cancel")
	if err != nil {
		return err
	}
	defer sb.Cleanup(context.WithoutCancel(ctx))
	cctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var cancelled error
	wg.Add(1)
	go func() {
		defer wg.Done()
		_, _, _, cancelled = execOut(cctx, sb, nil, nil, "", "sleep", "300")
	}()
	time.Sleep(500 * time.Millisecond)
	code, out, _, err := execOut(ctx, sb, nil, nil, "", "sh", "-c", "sleep 1; echo beside")
	cancel()
	wg.Wait()
	switch {
	case err != nil || code != 0 || out != "beside\n":
		return fmt.Errorf("an Exec beside a running one: exit %d, stdout %q, %v", code, out, err)
	case cancelled == nil:
		return errors.New("a cancelled Exec of sleep 300 returned no error")
	}
	code, out, _, err = execOut(ctx, sb, nil, nil, "", "echo", "alive")
	if err != nil || code != 0 || out != "alive\n" {
		return fmt.Errorf("the sandbox after a cancelled Exec: exit %d, %q, %v", code, out, err)
	}
	return nil
}

// caseSandboxCleanup checks that Cleanup is idempotent and that an Exec
// after it is an error.
func caseSandboxCleanup(ctx context.Context, env *Env) error {
	sb, err := sandbox(ctx, env, "sandbox-cleanup")
	if err != nil {
		return err
	}
	if sb.ID() == "" {
		return errors.New("Sandbox.ID() is empty")
	}
	for i := range 2 {
		if err := sb.Cleanup(ctx); err != nil {
			return fmt.Errorf("Cleanup %d: %w", i+1, err)
		}
	}
	if _, _, _, err := execOut(ctx, sb, nil, nil, "", "true"); err == nil {
		return errors.New("Exec after Cleanup returned no error")
	}
	// A sandbox left to Close: the leak probe sees whether Close removed it.
	_, err = sandbox(ctx, env, "sandbox-left")
	return err
}

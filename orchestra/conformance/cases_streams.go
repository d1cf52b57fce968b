package conformance

import (
	"context"
	"fmt"
	"strings"

	"github.com/jtarchie/pocketci/orchestra"
	"github.com/jtarchie/pocketci/orchestra/conformance/testkit"
)

// caseStdinDevice reads stdin through /dev/stdin, as scripts do.
func caseStdinDevice(ctx context.Context, env *Env) error {
	t := task(env, "dev-stdin", "sh", "-c", "cat < /dev/stdin")
	t.Stdin = strings.NewReader("through /dev/stdin")
	r, err := runToEnd(ctx, env, t)
	if err != nil {
		return err
	}
	return expect(t.ID, r, 0, "through /dev/stdin", ptr(""))
}

// noNewlineCommand writes to both streams without a final newline, as a
// program printing JSON often does.
const noNewlineCommand = `echo line; printf 'out-tail'; printf 'err-tail' >&2`

func caseNoFinalNewlineLogs(ctx context.Context, env *Env) error {
	r, err := runToEnd(ctx, env, task(env, "no-newline-logs", "sh", "-c", noNewlineCommand))
	if err != nil {
		return err
	}
	return expect("no-newline-logs", r, 0, "line\nout-tail", ptr("err-tail"))
}

// follow runs task and follows its output to the end with Logs(follow).
func follow(ctx context.Context, env *Env, t orchestra.Task) (stdout, stderr []byte, code int, err error) {
	c, err := env.Driver.RunContainer(ctx, t)
	if err != nil {
		return nil, nil, 0, fmt.Errorf("task %q: run container: %w", t.ID, err)
	}
	var out, errb testkit.SafeBuffer
	if err := c.Logs(ctx, &out, &errb, true); err != nil {
		return nil, nil, 0, fmt.Errorf("task %q: Logs(follow): %w", t.ID, err)
	}
	st, err := testkit.WaitDone(ctx, c)
	if err != nil {
		return nil, nil, 0, fmt.Errorf("task %q: %w", t.ID, err)
	}
	return out.Bytes(), errb.Bytes(), st.ExitCode(), nil
}

func caseNoFinalNewlineFollow(ctx context.Context, env *Env) error {
	out, errb, code, err := follow(ctx, env, task(env, "no-newline-follow", "sh", "-c", noNewlineCommand))
	if err != nil {
		return err
	}
	return expect("no-newline-follow", result{ExitCode: code, Stdout: out, Stderr: errb}, 0, "line\nout-tail", ptr("err-tail"))
}

// orderLines is how many lines each stream gets in "stream order".
const orderLines = 2000

// orderCommand interleaves numbered lines on stdout and stderr.
var orderCommand = fmt.Sprintf(`i=1; while [ $i -le %d ]; do echo o$i; echo e$i >&2; i=$((i+1)); done`, orderLines)

func orderWant(prefix string) string {
	var b strings.Builder
	for i := 1; i <= orderLines; i++ {
		fmt.Fprintf(&b, "%s%d\n", prefix, i)
	}
	return b.String()
}

// caseStreamOrder checks that each stream keeps the order in which the task
// wrote it, through Logs with and without follow.
func caseStreamOrder(ctx context.Context, env *Env) error {
	wantOut, wantErr := orderWant("o"), orderWant("e")
	r, err := runToEnd(ctx, env, task(env, "stream-order", "sh", "-c", orderCommand))
	if err != nil {
		return err
	}
	if err := expectStreams("Logs", r.Stdout, r.Stderr, wantOut, wantErr); err != nil {
		return err
	}
	out, errb, _, err := follow(ctx, env, task(env, "stream-order-follow", "sh", "-c", orderCommand))
	if err != nil {
		return err
	}
	return expectStreams("Logs(follow)", out, errb, wantOut, wantErr)
}

func expectStreams(via string, out, errb []byte, wantOut, wantErr string) error {
	if string(out) != wantOut {
		return fmt.Errorf("%s: stdout lost its order or bytes: first difference at byte %d of %d (got %d bytes)", via, firstDiff(out, []byte(wantOut)), len(wantOut), len(out))
	}
	if string(errb) != wantErr {
		return fmt.Errorf("%s: stderr lost its order or bytes: first difference at byte %d of %d (got %d bytes)", via, firstDiff(errb, []byte(wantErr)), len(wantErr), len(errb))
	}
	return nil
}

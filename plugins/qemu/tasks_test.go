package qemu

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/jtarchie/pocketci/orchestra"
	"github.com/jtarchie/pocketci/orchestra/conformance/testkit"
)

// failingReader yields data, then fails with err.
type failingReader struct {
	data string
	err  error
	wait time.Duration
	sent bool
}

func (r *failingReader) Read(p []byte) (int, error) {
	if !r.sent {
		r.sent = true
		return copy(p, r.data), nil
	}
	time.Sleep(r.wait)
	return 0, r.err
}

// TestTaskContract runs, on one VM, what orchestra.ValidateTask accepts and
// pocketci relies on: IDs of any shape, relative mounts, and a stdin that
// fails.
func TestTaskContract(t *testing.T) {
	requireQEMU(t)
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	d, _ := newTestDriver(t)

	t.Run("IDs run and are idempotent", func(t *testing.T) {
		ids := []string{"_nano", "-dash", "with space", "ünïcödé ✓", strings.Repeat("long-", 50), "a/b", "a b", ".", ".."}
		seen := map[string]string{}
		for _, id := range ids {
			c, err := d.RunContainer(ctx, orchestra.Task{ID: id, Command: []string{"sh", "-c", `echo "$0"`, id}})
			if err != nil {
				t.Fatalf("ID %q: %v", id, err)
			}
			st := testkit.MustWaitDone(t, c, taskTimeout)
			again, err := d.RunContainer(ctx, orchestra.Task{ID: id, Command: []string{"sh", "-c", "echo second run"}})
			if err != nil || again != c {
				t.Fatalf("ID %q again: %v, %v; want the same container", id, again, err)
			}
			var out strings.Builder
			if err := c.Logs(ctx, &out, io.Discard, false); err != nil {
				t.Fatal(err)
			}
			if st.ExitCode() != 0 || out.String() != id+"\n" {
				t.Fatalf("ID %q: exit %d stdout %q", id, st.ExitCode(), out.String())
			}
			name := c.(*Container).name
			if other, ok := seen[name]; ok {
				t.Fatalf("IDs %q and %q share the directory %q", other, id, name)
			}
			seen[name] = id
		}
	})

	t.Run("relative mount shared by two tasks", func(t *testing.T) {
		m := orchestra.Mounts{{Name: "shared-rel", Path: "cache/deps"}}
		if code, _, errs := runTask(t, ctx, d, orchestra.Task{ID: "rel-w", Mounts: m, Command: []string{"sh", "-c", "echo from-writer > cache/deps/f"}}); code != 0 {
			t.Fatalf("writer: exit %d stderr %q", code, errs)
		}
		code, out, errs := runTask(t, ctx, d, orchestra.Task{ID: "rel-r", Mounts: m, Command: []string{"sh", "-c", `cat "$PWD/cache/deps/f"`}})
		if code != 0 || out != "from-writer\n" {
			t.Fatalf("reader: exit %d stdout %q stderr %q", code, out, errs)
		}
	})

	t.Run("a stdin reader that fails stops the task", func(t *testing.T) {
		readErr := errors.New("caller's stdin broke")
		c, err := d.RunContainer(ctx, orchestra.Task{ID: "stdin-fails", Command: []string{"sh", "-c", "cat; echo cat-exited-$?"},
			Stdin: &failingReader{data: "partial input\n", err: readErr, wait: 300 * time.Millisecond}})
		if err != nil {
			t.Fatal(err)
		}
		var st orchestra.ContainerStatus
		for {
			st, err = c.Status(ctx)
			if st != nil && st.IsDone() {
				break
			}
			if err != nil {
				t.Fatalf("status before done: %v", err)
			}
			time.Sleep(5 * time.Millisecond)
		}
		if st.ExitCode() == 0 || err == nil || !errors.Is(err, readErr) || !strings.Contains(err.Error(), "stdin") {
			t.Fatalf("exit %d, status error %v: want non-zero and an error naming stdin", st.ExitCode(), err)
		}
		var out strings.Builder
		_ = c.Logs(ctx, &out, io.Discard, false)
		if strings.Contains(out.String(), "cat-exited-0") {
			t.Fatalf("the task saw a clean end of input: %q", out.String())
		}
	})
}

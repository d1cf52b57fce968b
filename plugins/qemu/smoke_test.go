package qemu

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jtarchie/pocketci/orchestra"
)

func TestSmoke(t *testing.T) {
	requireQEMU(t)
	d, _ := newTestDriver(t)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	start := time.Now()
	code, out, errs := runTask(t, ctx, d, orchestra.Task{ID: "a", Command: []string{"sh", "-c", "echo hi; echo err >&2; pwd; id; env; exit 3"}, Env: map[string]string{"X": "y z"}})
	t.Logf("first task %s: code %d out %q err %q", time.Since(start), code, out, errs)
	start = time.Now()
	code, out, errs = runTask(t, ctx, d, orchestra.Task{ID: "b", Command: []string{"cat"}, User: "nobody", Stdin: strings.NewReader("hello stdin")})
	t.Logf("second task %s: code %d out %q err %q", time.Since(start), code, out, errs)
}

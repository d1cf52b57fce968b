package wire

import (
	"bytes"
	"context"
	"errors"
	"github.com/jtarchie/pocketci/orchestra/conformance/testkit"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/jtarchie/pocketci/orchestra"
	"github.com/jtarchie/pocketci/proto/driverv1"
)

func catOutput(t *testing.T, c orchestra.Container) string {
	t.Helper()
	testkit.MustWaitDone(t, c, 30*time.Second)
	var out bytes.Buffer
	if err := c.Logs(context.Background(), &out, io.Discard, false); err != nil {
		t.Fatal(err)
	}
	return out.String()
}

// TestStdinReadErrorReachesTheTask: a caller's stdin reader that fails
// ends the task's stdin with that error, not with a clean end.
func TestStdinReadErrorReachesTheTask(t *testing.T) {
	d := open(t, connect(t))
	c, err := d.RunContainer(context.Background(), orchestra.Task{ID: "failing", Command: []string{"cat"},
		Stdin: io.MultiReader(strings.NewReader("12345"), iotest.ErrReader(errors.New("disk on fire")))})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := catOutput(t, c), "5 stdin error: stdin from host: disk on fire\n"; got != want {
		t.Fatalf("the task read %q, want %q", got, want)
	}
}

// TestRunContainerFailsWhenStdinCannotOpen: when the stdin connection does
// not open, RunContainer fails naming stdin and the task never starts (it
// would wait on its input forever).
func TestRunContainerFailsWhenStdinCannotOpen(t *testing.T) {
	c, srv := connectServer(t)
	c.bulk = filepath.Join(t.TempDir(), "gone.sock")
	d := c.Adopt(OpenDriver{Handle: 1, Name: "fake"})
	if _, err := c.rpc.Open(context.Background(), &driverv1.OpenRequest{Namespace: "ns", HostProtocolVersion: ProtocolVersion}); err != nil {
		t.Fatal(err)
	}
	_, err := d.RunContainer(context.Background(), orchestra.Task{ID: "nostdin", Command: []string{"cat"}, Stdin: strings.NewReader("x")})
	if err == nil || !strings.Contains(err.Error(), "stdin") || !strings.Contains(err.Error(), "plugin fake") {
		t.Fatalf("RunContainer = %v, want an error naming the plugin and stdin", err)
	}
	srv.mu.Lock()
	defer srv.mu.Unlock()
	for _, inst := range srv.drivers {
		if n, _, _ := inst.size(); n != 0 {
			t.Fatalf("the plugin has %d containers: the task started without its stdin", n)
		}
	}
}

// TestNoStdinEntryOutlivesItsTask: the registry forgets a task's stdin when
// the input ends, when the task is refused, and when it is cleaned up while
// its input is still open.
func TestNoStdinEntryOutlivesItsTask(t *testing.T) {
	c, srv := connectServer(t)
	// A task closed before its stream came keeps its closed pipe
	// this long, for that stream.
	srv.stdins.timeout = 200 * time.Millisecond
	d := open(t, c)
	ctx := context.Background()
	done, err := d.RunContainer(ctx, orchestra.Task{ID: "ends", Command: []string{"cat"}, Stdin: strings.NewReader("abc")})
	if err != nil {
		t.Fatal(err)
	}
	catOutput(t, done)
	if _, err := d.RunContainer(ctx, orchestra.Task{ID: "refused", Command: []string{"fail"}, Stdin: strings.NewReader("abc")}); !errors.Is(err, orchestra.ErrInvalidTask) {
		t.Fatalf("refused task: %v", err)
	}
	pr, pw := io.Pipe() // an input that never ends
	defer pw.Close()
	open, err := d.RunContainer(ctx, orchestra.Task{ID: "open", Command: []string{"cat"}, Stdin: pr})
	if err != nil {
		t.Fatal(err)
	}
	if err := open.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	if err := done.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for srv.stdins.len() != 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if n := srv.stdins.len(); n != 0 {
		t.Fatalf("%d stdin entries left after every task ended", n)
	}
}

// TestStdinRegistry: either side may come first; an entry nobody claims is
// closed after the timeout; drop forgets only the entry it is given.
func TestStdinRegistry(t *testing.T) {
	tests := []struct {
		name string
		run  func(t *testing.T, r *stdinRegistry)
	}{
		{"stream first", func(t *testing.T, r *stdinRegistry) {
			if a, c := r.attach("t"), r.claim("t"); a != c {
				t.Fatal("attach then claim gave two pipes")
			}
		}},
		{"task first", func(t *testing.T, r *stdinRegistry) {
			if c, a := r.claim("t"), r.attach("t"); a != c {
				t.Fatal("claim then attach gave two pipes")
			}
		}},
		{"unclaimed closes", func(t *testing.T, r *stdinRegistry) {
			r.timeout = 10 * time.Millisecond
			p := r.attach("t")
			if _, err := p.w.Write([]byte("x")); err == nil {
				t.Fatal("a write to an unclaimed pipe succeeded; want it closed once it timed out")
			}
			for end := time.Now().Add(time.Second); r.len() != 0 && time.Now().Before(end); {
				time.Sleep(time.Millisecond) // the timer drops the entry just after it closes the pipe
			}
			if r.len() != 0 {
				t.Fatal("the unclaimed entry stayed")
			}
		}},
		{"claimed stays", func(t *testing.T, r *stdinRegistry) {
			r.timeout = 10 * time.Millisecond
			p := r.attach("t")
			r.claim("t")
			time.Sleep(30 * time.Millisecond)
			if r.len() != 1 {
				t.Fatal("a claimed entry timed out")
			}
			p.close(errors.New("done"))
			if r.len() != 0 {
				t.Fatal("close kept the entry")
			}
		}},
		{"closed before its stream", func(t *testing.T, r *stdinRegistry) {
			r.timeout = 20 * time.Millisecond
			p := r.claim("t")
			p.close(errors.New("task refused"))
			late := r.attach("t")
			if _, err := late.w.Write([]byte("x")); late != p || err == nil {
				t.Fatal("a stream that came after its task closed got a fresh pipe nobody reads")
			}
			r.drop(late)
			q := r.claim("u")
			q.close(errors.New("refused, and no stream ever comes"))
			time.Sleep(60 * time.Millisecond)
			if r.len() != 0 {
				t.Fatal("a closed pipe no stream came for stayed past the timeout")
			}
		}},
		{"drop keeps a newer entry", func(t *testing.T, r *stdinRegistry) {
			old := r.claim("t")
			r.drop(old)
			r.claim("t")
			r.drop(old)
			if r.len() != 1 {
				t.Fatal("dropping a stale pipe removed the current one")
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.run(t, newStdinRegistry()) })
	}
}

package qemu

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jtarchie/pocketci/orchestra"
)

// execIn runs cmd in sb and returns its exit code and output.
func execIn(t *testing.T, ctx context.Context, sb orchestra.Sandbox, env map[string]string, dir string, cmd ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	st, err := sb.Exec(ctx, cmd, env, dir, nil, &out, &errb)
	if err != nil {
		t.Fatalf("exec %q: %v (stderr %q)", cmd, err, errb.String())
	}
	return st.ExitCode(), out.String(), errb.String()
}

// TestSandbox checks what the conformance cases do not: a sandbox without
// an image, volumes and users in one, a cancelled command's whole tree,
// Cleanup under a running command, and a restart of the guest daemon.
func TestSandbox(t *testing.T) {
	requireQEMU(t)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	d, _ := newTestDriver(t)

	t.Run("without an image", func(t *testing.T) {
		sb, err := d.StartSandbox(ctx, orchestra.Task{ID: "plain", Env: map[string]string{"BASE": "b"}})
		if err != nil {
			t.Fatal(err)
		}
		defer sb.Cleanup(ctx)
		if code, out, errs := execIn(t, ctx, sb, map[string]string{"X": "1"}, "sub", "sh", "-c", "echo kept > f; echo $BASE$X; pwd"); code != 0 ||
			!strings.HasPrefix(out, "b1\n") || !strings.HasSuffix(out, "/work/sub\n") {
			t.Fatalf("exit %d stdout %q stderr %q", code, out, errs)
		}
		if code, out, _ := execIn(t, ctx, sb, nil, "", "sh", "-c", "cat sub/f; echo [$X]"); code != 0 || out != "kept\n[]\n" {
			t.Fatalf("second exec: exit %d stdout %q", code, out)
		}
	})

	requireDocker(t)
	t.Run("volumes and users in an image", func(t *testing.T) {
		vol, err := d.CreateVolume(ctx, "sb-vol", 0)
		if err != nil {
			t.Fatal(err)
		}
		sb, err := d.StartSandbox(ctx, orchestra.Task{ID: "vol", Image: "busybox", User: "nobody",
			Mounts: orchestra.Mounts{{Name: "sb-vol", Path: "/data"}}})
		if err != nil {
			t.Fatal(err)
		}
		defer sb.Cleanup(ctx)
		// The host puts a file in the volume under the running sandbox.
		if err := os.WriteFile(filepath.Join(vol.Path(), "in.txt"), []byte("v\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if code, out, errs := execIn(t, ctx, sb, nil, "/data", "sh", "-c", "id -u; cat in.txt"); code != 0 || out != "65534\nv\n" {
			t.Fatalf("exit %d stdout %q stderr %q", code, out, errs)
		}
	})

	t.Run("cancel kills the command's tree only", func(t *testing.T) {
		sb, err := d.StartSandbox(ctx, orchestra.Task{ID: "tree", Image: "busybox"})
		if err != nil {
			t.Fatal(err)
		}
		defer sb.Cleanup(ctx)
		cctx, stop := context.WithTimeout(ctx, 3*time.Second)
		defer stop()
		start := time.Now()
		_, err = sb.Exec(cctx, []string{"sh", "-c", "sleep 301 & sleep 302"}, nil, "", nil, nil, nil)
		if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > time.Minute {
			t.Fatalf("a cancelled exec returned %v after %s", err, time.Since(start))
		}
		if code, out, _ := execIn(t, ctx, sb, nil, "", "sh", "-c", "pidof sleep || echo none"); code != 0 || out != "none\n" {
			t.Fatalf("after the cancel: exit %d, sleeps left %q", code, out)
		}
	})

	t.Run("exec cost", func(t *testing.T) {
		sb, err := d.StartSandbox(ctx, orchestra.Task{ID: "cost", Image: "busybox"})
		if err != nil {
			t.Fatal(err)
		}
		defer sb.Cleanup(ctx)
		execIn(t, ctx, sb, nil, "", "true") // mounts its root
		const n = 10
		start := time.Now()
		for range n {
			if code, _, _ := execIn(t, ctx, sb, nil, "", "true"); code != 0 {
				t.Fatalf("true: exit %d", code)
			}
		}
		t.Logf("an Exec of true in an image sandbox: %s on average", (time.Since(start) / n).Round(100*time.Microsecond))
	})

	t.Run("cleanup under a running command, then the root is gone", func(t *testing.T) {
		s, err := d.StartSandbox(ctx, orchestra.Task{ID: "under", Image: "busybox"})
		if err != nil {
			t.Fatal(err)
		}
		sb := s.(*Sandbox)
		execIn(t, ctx, sb, nil, "", "true") // its root is mounted
		done := make(chan error, 1)
		go func() {
			_, err := sb.Exec(ctx, []string{"sleep", "300"}, nil, "", nil, nil, nil)
			done <- err
		}()
		time.Sleep(time.Second)
		if err := sb.Cleanup(ctx); err != nil {
			t.Fatal(err)
		}
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Fatal("the running Exec did not return after Cleanup")
		}
		time.Sleep(200 * time.Millisecond) // the drop request is asynchronous
		_, out, _, err := d.vm.run(ctx, "test -e "+"/run/pocketci-root/sb-"+sb.name+" && echo left || echo gone")
		if err != nil || strings.TrimSpace(out) != "gone" {
			t.Fatalf("the sandbox's root in the guest: %q %v", out, err)
		}
		if _, err := os.Stat(sb.hostDir); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("the sandbox's directory: %v", err)
		}
	})

	t.Run("state survives a restart of the guest daemon", func(t *testing.T) {
		sb, err := d.StartSandbox(ctx, orchestra.Task{ID: "restart", Image: "busybox"})
		if err != nil {
			t.Fatal(err)
		}
		defer sb.Cleanup(ctx)
		execIn(t, ctx, sb, nil, "", "sh", "-c", "echo kept > /root-file")
		if err := d.vm.runOK(ctx, "kill the daemon", "killall -9 pocketci-guestd; sleep 2"); err != nil {
			t.Fatal(err)
		}
		if code, out, errs := execIn(t, ctx, sb, nil, "", "cat", "/root-file"); code != 0 || out != "kept\n" {
			t.Fatalf("after the restart: exit %d stdout %q stderr %q", code, out, errs)
		}
	})
}

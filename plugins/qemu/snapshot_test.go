package qemu

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jtarchie/pocketci/orchestra"
)

// TestBootSnapshot: the first boot saves a snapshot, later boots restore it
// (shares mounted again, clock set),
// and a snapshot that does not restore is dropped for a cold boot that
// saves a fresh one.
func TestBootSnapshot(t *testing.T) {
	requireQEMU(t)
	kernel, initrd := ImagePaths()
	t.Setenv(EnvKernel, kernel)
	t.Setenv(EnvInitrd, initrd)
	t.Setenv(EnvGuestd, GuestdPath())
	t.Setenv("XDG_CACHE_HOME", t.TempDir()) // a snapshot directory of this test's own
	t.Setenv(EnvSnapshot, "on")
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()

	boot := func(name string) string {
		t.Helper()
		var logs lockedBuffer
		d, err := New("qt-snap-"+name+"-"+time.Now().Format("150405.000000"), Config{}, slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo})))
		if err != nil {
			t.Fatal(err)
		}
		defer func() {
			if err := d.Close(); err != nil {
				t.Error(err)
			}
		}()
		vol, err := d.CreateVolume(ctx, "v", 0)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(vol.(*Volume).hostDir, "f"), []byte("on the share"), 0o644); err != nil {
			t.Fatal(err)
		}
		code, out, errs := runTask(t, ctx, d, orchestra.Task{ID: "a", Mounts: orchestra.Mounts{{Name: "v", Path: "v"}},
			Command: []string{"sh", "-c", "cat v/f; echo; date +%s"}})
		if code != 0 {
			t.Fatalf("%s: exit %d stderr %q", name, code, errs)
		}
		lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
		if len(lines) != 2 || lines[0] != "on the share" {
			t.Fatalf("%s: stdout %q", name, out)
		}
		guest, _ := strconv.ParseInt(lines[1], 10, 64)
		if skew := time.Now().Unix() - guest; skew < -5 || skew > 5 {
			t.Errorf("%s: guest clock is %d s off the host's", name, skew)
		}
		return logs.String()
	}

	logs := boot("cold")
	if !strings.Contains(logs, "saved a boot snapshot") {
		t.Fatalf("the first boot saved no snapshot:\n%s", logs)
	}
	snaps, _ := filepath.Glob(filepath.Join(snapshotDir(), "*.state"))
	if len(snaps) != 1 {
		t.Fatalf("snapshots %v, want one", snaps)
	}
	for _, n := range []string{"restore1", "restore2"} {
		if logs := boot(n); !strings.Contains(logs, "restored from the boot snapshot") {
			t.Fatalf("%s did not restore:\n%s", n, logs)
		}
	}

	if err := os.Truncate(snaps[0], 4096); err != nil {
		t.Fatal(err)
	}
	logs = boot("broken")
	if !strings.Contains(logs, "did not restore; booting cold") || !strings.Contains(logs, "saved a boot snapshot") {
		t.Fatalf("a broken snapshot: want a cold boot that saves a new one:\n%s", logs)
	}
	if fi, err := os.Stat(snaps[0]); err != nil || fi.Size() <= 4096 {
		t.Fatalf("the snapshot was not saved again: %v", err)
	}
}

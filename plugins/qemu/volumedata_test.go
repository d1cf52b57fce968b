package qemu

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jtarchie/pocketci/orchestra"
	"github.com/jtarchie/pocketci/orchestra/conformance/testkit"
	"github.com/jtarchie/pocketci/orchestra/volumetar"
)

// TestVolumeDataOnTheHost moves files in and out of volumes without a VM
// (and without qemu): the volume is the host directory a task mounts.
func TestVolumeDataOnTheHost(t *testing.T) {
	ctx := t.Context()
	d, err := New("qt-vdata", Config{StateDir: t.TempDir()}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	archive := testkit.TarOf(t, map[string]string{"a.txt": "A", "sub/b.txt": "B"})
	if err := d.CopyToVolume(ctx, "made-by-copy", bytes.NewReader(archive)); err != nil {
		t.Fatalf("CopyToVolume of a volume that does not exist yet: %v", err)
	}
	if d.vm != nil {
		t.Fatal("CopyToVolume booted a VM")
	}
	vol, err := d.CreateVolume(ctx, "made-by-copy", 0)
	if err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(vol.Path(), "sub", "b.txt")); err != nil || string(b) != "B" {
		t.Fatalf("the volume's directory has %q, %v; want B", b, err)
	}
	t.Run("reads", func(t *testing.T) {
		for _, tc := range []struct {
			paths []string
			want  string
		}{
			{nil, ""}, {[]string{"a.txt"}, "a.txt"}, {[]string{"sub"}, "sub/b.txt"}, {[]string{"a.txt", "sub"}, "a.txt sub/b.txt"},
		} {
			rc, err := d.ReadFilesFromVolume(ctx, "made-by-copy", tc.paths...)
			if err != nil {
				t.Fatalf("ReadFilesFromVolume %q: %v", tc.paths, err)
			}
			if got := testkit.TarNames(t, rc); got != tc.want {
				t.Errorf("ReadFilesFromVolume %q: %q, want %q", tc.paths, got, tc.want)
			}
		}
		rc, err := d.CopyFromVolume(ctx, "made-by-copy")
		if err != nil {
			t.Fatal(err)
		}
		if got := testkit.TarNames(t, rc); got != "a.txt sub/b.txt" {
			t.Errorf("CopyFromVolume: %q", got)
		}
	})
	t.Run("errors are the call's", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			call func() error
			want error
		}{
			{"copy from an unknown volume", func() error { _, err := d.CopyFromVolume(ctx, "nope"); return err }, orchestra.ErrVolumeNotFound},
			{"read from an unknown volume", func() error { _, err := d.ReadFilesFromVolume(ctx, "nope", "a.txt"); return err }, orchestra.ErrVolumeNotFound},
			{"a missing path", func() error { _, err := d.ReadFilesFromVolume(ctx, "made-by-copy", "none.txt"); return err }, fs.ErrNotExist},
			{"an escaping path", func() error { _, err := d.ReadFilesFromVolume(ctx, "made-by-copy", "../x"); return err }, volumetar.ErrUnsafePath},
			{"an escaping entry", func() error {
				return d.CopyToVolume(ctx, "made-by-copy", bytes.NewReader(testkit.TarOf(t, map[string]string{"../up.txt": "x"})))
			}, volumetar.ErrUnsafeEntry},
		} {
			if err := tc.call(); !errors.Is(err, tc.want) {
				t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
			}
		}
		if _, err := os.Stat(filepath.Join(d.share, "volumes", "up.txt")); err == nil {
			t.Error("an escaping entry was written next to the volume")
		}
	})
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if err := d.CopyToVolume(ctx, "after", bytes.NewReader(archive)); !errors.Is(err, orchestra.ErrClosed) {
		t.Errorf("CopyToVolume after Close: %v, want ErrClosed", err)
	}
}

// TestVolumeDataWithARunningVM checks that the guest, which mounts the
// share without a cache, sees at once what the host extracted while its VM
// runs (also a file it read before, replaced), and that the host reads what
// a task wrote.
func TestVolumeDataWithARunningVM(t *testing.T) {
	requireQEMU(t)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	d, _ := newTestDriver(t)
	mounts := orchestra.Mounts{{Name: "live", Path: "data"}}
	steps := []struct {
		body, user, want string
	}{
		{"one\n", "", "one\n"},
		{"second version\n", "nobody", "second version\n"}, // longer, read by another user
		{"3\n", "", "3\n"},                                 // shorter
	}
	for i, s := range steps {
		if err := d.CopyToVolume(ctx, "live", bytes.NewReader(testkit.TarOf(t, map[string]string{"f.txt": s.body}))); err != nil {
			t.Fatal(err)
		}
		code, out, errs := runTask(t, ctx, d, orchestra.Task{ID: fmt.Sprintf("read-%d", i), User: s.user, Mounts: mounts,
			Command: []string{"sh", "-c", "cat data/f.txt"}})
		if code != 0 || out != s.want {
			t.Fatalf("step %d: exit %d stdout %q stderr %q, want %q", i, code, out, errs, s.want)
		}
	}
	code, _, errs := runTask(t, ctx, d, orchestra.Task{ID: "write", Mounts: mounts, Command: []string{"sh", "-c", "mkdir -p data/out && echo w > data/out/w.txt"}})
	if code != 0 {
		t.Fatalf("write: exit %d stderr %q", code, errs)
	}
	rc, err := d.ReadFilesFromVolume(ctx, "live", "out")
	if err != nil {
		t.Fatal(err)
	}
	if got := testkit.TarNames(t, rc); got != "out/w.txt" {
		t.Fatalf("ReadFilesFromVolume out: %q", got)
	}
}

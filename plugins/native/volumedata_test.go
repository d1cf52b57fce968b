//go:build linux

package native

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/jtarchie/pocketci/orchestra"
	"github.com/jtarchie/pocketci/orchestra/conformance/testkit"
	"github.com/jtarchie/pocketci/orchestra/volumetar"
)

// TestVolumeDataErrors checks the errors of the volume data calls, each
// returned by the call itself (before any byte of an archive).
func TestVolumeDataErrors(t *testing.T) {
	useRoot(t)
	d := newDriver(t, "vdata-errors")
	vd := d.(orchestra.VolumeDataAccessor)
	if err := vd.CopyToVolume(t.Context(), "v", bytes.NewReader(testkit.TarOf(t, map[string]string{"a.txt": "a"}))); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		open   func() (io.ReadCloser, error)
		is     error
		naming string
	}{
		{"CopyFromVolume of a missing volume", func() (io.ReadCloser, error) { return vd.CopyFromVolume(t.Context(), "missing") }, orchestra.ErrVolumeNotFound, `"missing"`},
		{"ReadFilesFromVolume of a missing volume", func() (io.ReadCloser, error) { return vd.ReadFilesFromVolume(t.Context(), "missing", "a.txt") }, orchestra.ErrVolumeNotFound, `"missing"`},
		{"a missing path", func() (io.ReadCloser, error) { return vd.ReadFilesFromVolume(t.Context(), "v", "a.txt", "nope") }, fs.ErrNotExist, "nope"},
		{"an absolute path", func() (io.ReadCloser, error) { return vd.ReadFilesFromVolume(t.Context(), "v", "/etc/passwd") }, volumetar.ErrUnsafePath, "/etc/passwd"},
		{"a path climbing out", func() (io.ReadCloser, error) { return vd.ReadFilesFromVolume(t.Context(), "v", "x/../../..") }, volumetar.ErrUnsafePath, "x/../../.."},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rc, err := tt.open()
			if err == nil {
				rc.Close()
				t.Fatal("no error")
			}
			if !errors.Is(err, tt.is) || !strings.Contains(err.Error(), tt.naming) {
				t.Fatalf("%v; want an error wrapping %v naming %s", err, tt.is, tt.naming)
			}
		})
	}
	err := vd.CopyToVolume(t.Context(), "v", bytes.NewReader(testkit.TarOf(t, map[string]string{"../out.txt": "x"})))
	if !errors.Is(err, volumetar.ErrUnsafeEntry) || !strings.Contains(err.Error(), "../out.txt") {
		t.Fatalf("CopyToVolume of ../out.txt: %v; want ErrUnsafeEntry naming it", err)
	}
	if _, err := os.Stat(filepath.Join(Root(), "vdata-errors", "volumes", "out.txt")); err == nil {
		t.Fatal("an entry climbing out was written beside the volume")
	}
	rc, err := vd.ReadFilesFromVolume(t.Context(), "v")
	if err != nil {
		t.Fatal(err)
	}
	if names := testkit.TarNames(t, rc); names != "" {
		t.Fatalf("ReadFilesFromVolume without paths: %q; want an empty archive", names)
	}
}

// TestVolumeDataStreams checks that an archive is streamed as it is read
// (the goroutine does not hold the volume in memory), and that closing it
// early stops its goroutine.
func TestVolumeDataStreams(t *testing.T) {
	useRoot(t)
	d := newDriver(t, "vdata-stream")
	v, err := d.CreateVolume(t.Context(), "big", 0)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(filepath.Join(v.Path(), "big.bin"))
	if err != nil {
		t.Fatal(err)
	}
	// 256 MiB, sparse: cheap on disk, large in an archive.
	if err := f.Truncate(256 << 20); err != nil {
		t.Fatal(err)
	}
	_ = f.Close()
	vd := d.(orchestra.VolumeDataAccessor)
	before := runtime.NumGoroutine()
	var stats runtime.MemStats
	runtime.ReadMemStats(&stats)
	heap := stats.HeapAlloc
	rc, err := vd.CopyFromVolume(t.Context(), "big")
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	for range 8 {
		if _, err := io.ReadFull(rc, buf); err != nil {
			t.Fatal(err)
		}
	}
	runtime.ReadMemStats(&stats)
	if grown := int64(stats.HeapAlloc) - int64(heap); grown > 64<<20 {
		t.Errorf("heap grew by %d MiB while 8 MiB of a 256 MiB archive were read", grown>>20)
	}
	if err := rc.Close(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		t.Fatalf("%d goroutines after Close, %d before: the archive goroutine runs on", n, before)
	}
}

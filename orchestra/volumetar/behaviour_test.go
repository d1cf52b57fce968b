package volumetar

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	must(t, err)
	return string(b)
}

func TestExtractReplacesWithoutFollowing(t *testing.T) {
	s := newSandbox(t)
	r := s.root
	must(t, os.WriteFile(filepath.Join(r, "file"), []byte("old"), 0o644))
	must(t, os.MkdirAll(filepath.Join(r, "dir/inner"), 0o755))
	must(t, os.Symlink(filepath.Join(s.outside, "secret"), filepath.Join(r, "tofile")))
	must(t, os.Symlink(s.outside, filepath.Join(r, "todir")))
	must(t, os.Mkdir(filepath.Join(r, "real"), 0o755))
	must(t, os.Symlink("real", filepath.Join(r, "cur")))

	data := tarOf(t,
		reg("file", "new"),            // an existing file is replaced
		reg("dir", "was a directory"), // so is a directory, with its contents
		reg("tofile", "not followed"), // a symlink is replaced, its target untouched
		dirEnt("todir/"),              // also by a directory
		reg("todir/x", "inside"),      // which then holds files
		reg("cur/y", "through"),       // an existing symlink inside the root is followed
		symlinkEnt("abs", s.outside),  // symlinks keep any target
		symlinkEnt("sl", "/etc"),      // an archive symlink...
		dirEnt("sl/"),                 // ...replaced by a directory...
		reg("sl/z", "z"),              // ...can be written into
		hardlinkEnt("hard", "file"),   // hard links inside the root work
		dirEnt("./"),                  // the root's own entry is skipped
		ent{h: tar.Header{Typeflag: tar.TypeXGlobalHeader, Name: "pax_global_header", PAXRecords: map[string]string{"comment": "c"}}},
	)
	must(t, Extract(context.Background(), r, bytes.NewReader(data)))
	for name, want := range map[string]string{"file": "new", "dir": "was a directory", "tofile": "not followed",
		"todir/x": "inside", "real/y": "through", "sl/z": "z", "hard": "new"} {
		if got := readFile(t, filepath.Join(r, name)); got != want {
			t.Errorf("%s = %q, want %q", name, got, want)
		}
	}
	if target, err := os.Readlink(filepath.Join(r, "abs")); err != nil || target != s.outside {
		t.Errorf("abs -> %q, %v", target, err)
	}
	a, _ := os.Stat(filepath.Join(r, "file"))
	b, _ := os.Stat(filepath.Join(r, "hard"))
	if !os.SameFile(a, b) {
		t.Error("hard is not a hard link to file")
	}
	s.assertUntouched(t)
}

func TestExtractModes(t *testing.T) {
	s := newSandbox(t)
	setuid := reg("suid", "x")
	setuid.h.Mode = 0o6755
	sticky := dirEnt("tmp/")
	sticky.h.Mode = 0o1777
	ro := dirEnt("ro/")
	ro.h.Mode = 0o500
	must(t, Extract(context.Background(), s.root, bytes.NewReader(tarOf(t, setuid, sticky, ro, reg("ro/f", "f")))))
	for name, want := range map[string]fs.FileMode{"suid": 0o755, "tmp": fs.ModeDir | fs.ModeSticky | 0o777, "ro": fs.ModeDir | 0o500} {
		fi, err := os.Lstat(filepath.Join(s.root, name))
		must(t, err)
		if fi.Mode() != want {
			t.Errorf("%s: mode %v, want %v", name, fi.Mode(), want)
		}
	}
	fi, err := os.Stat(filepath.Join(s.root, "suid"))
	must(t, err)
	if !fi.ModTime().Equal(testTime) {
		t.Errorf("mtime %v, want %v", fi.ModTime(), testTime)
	}
}

// cancelAfter cancels its context once n bytes have been read.
type cancelAfter struct {
	r      io.Reader
	n      int
	cancel context.CancelFunc
}

func (c *cancelAfter) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if c.n -= n; c.n <= 0 {
		c.cancel()
	}
	return n, err
}

func TestExtractCancelled(t *testing.T) {
	data := tarOf(t, reg("a", "a"), reg("b", string(make([]byte, 100000))), reg("c", "c"))
	s := newSandbox(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Extract(ctx, s.root, bytes.NewReader(data)); err != context.Canceled {
		t.Fatalf("cancelled before: err = %v", err)
	}
	if got := listNames(t, s.root); got != "" {
		t.Fatalf("root holds %q", got)
	}
	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	err := Extract(ctx, s.root, &cancelAfter{r: &smallReader{bytes.NewReader(data)}, n: 2000, cancel: cancel})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled during: err = %v", err)
	}
	if _, err := os.Stat(filepath.Join(s.root, "c")); err == nil {
		t.Fatal("an entry after the cancellation was extracted")
	}
}

// smallReader reads in small pieces so that cancellation lands mid-file.
type smallReader struct{ r io.Reader }

func (s *smallReader) Read(p []byte) (int, error) { return s.r.Read(p[:min(len(p), 512)]) }

package volumetar

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// buildTree makes files of the given modes, empty and read-only
// directories and symlinks (relative, absolute, dangling) under dir.
func buildTree(t *testing.T, dir string) {
	t.Helper()
	files := []struct {
		name string
		mode fs.FileMode
		body string
	}{
		{"a.txt", 0o644, "alpha"}, {"run.sh", 0o755, "#!/bin/sh\n"}, {"private", 0o600, "p"},
		{"empty", 0o640, ""}, {"sub/b.txt", 0o644, strings.Repeat("b", 70000)},
		{"sub/deeper/c.txt", 0o444, "c"}, {"ro/f", 0o644, "in a read-only dir"},
	}
	for _, f := range files {
		p := filepath.Join(dir, f.name)
		must(t, os.MkdirAll(filepath.Dir(p), 0o755))
		must(t, os.WriteFile(p, []byte(f.body), 0o600))
		must(t, os.Chmod(p, f.mode))
		must(t, os.Chtimes(p, testTime, testTime))
	}
	for d, mode := range map[string]fs.FileMode{"emptydir": 0o700, "sticky": 0o777 | fs.ModeSticky, "sub": 0o750, "ro": 0o555} {
		must(t, os.MkdirAll(filepath.Join(dir, d), 0o755))
		must(t, os.Chmod(filepath.Join(dir, d), mode))
	}
	for name, target := range map[string]string{"link": "a.txt", "dirlink": "sub", "abs": "/etc/passwd", "dangling": "nope"} {
		must(t, os.Symlink(target, filepath.Join(dir, name)))
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// describe lists a tree: type, mode, content hash or link target, and the
// mtime of files.
func describe(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		line := fmt.Sprintf("%s %v", rel, fi.Mode())
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			target, _ := os.Readlink(p)
			line += " -> " + target
		case fi.Mode().IsRegular():
			b, _ := os.ReadFile(p)
			line += fmt.Sprintf(" %x %s", sha256.Sum256(b), fi.ModTime().UTC())
		}
		out = append(out, line)
		return nil
	})
	must(t, err)
	return out
}

func TestRoundTrip(t *testing.T) {
	src, dst := newSandbox(t), newSandbox(t)
	buildTree(t, src.root)
	var buf bytes.Buffer
	must(t, Archive(context.Background(), &buf, src.root))
	checked, err := io.ReadAll(Check(bytes.NewReader(buf.Bytes())))
	if err != nil || !bytes.Equal(checked, buf.Bytes()) {
		t.Fatalf("Check changed or refused Archive's output: %v", err)
	}
	must(t, Extract(context.Background(), dst.root, &buf))
	want, got := describe(t, src.root), describe(t, dst.root)
	if len(want) != 16 {
		t.Fatalf("source tree has %d entries, want 16: %q", len(want), want)
	}
	if !slices.Equal(want, got) {
		t.Fatalf("trees differ:\nwant %s\ngot  %s", strings.Join(want, "\n     "), strings.Join(got, "\n     "))
	}
	dst.assertUntouched(t)
}

// names lists the entries of an archive as "name" or "name -> target".
func names(t *testing.T, data []byte) []string {
	t.Helper()
	var out []string
	tr := tar.NewReader(bytes.NewReader(data))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		must(t, err)
		if h.Typeflag == tar.TypeSymlink {
			out = append(out, h.Name+" -> "+h.Linkname)
		} else {
			out = append(out, h.Name)
		}
	}
}

func TestArchivePaths(t *testing.T) {
	s := newSandbox(t)
	for _, f := range []string{"a.txt", "sub/b.txt", "sub/deep/c.txt"} {
		must(t, os.MkdirAll(filepath.Join(s.root, filepath.Dir(f)), 0o755))
		must(t, os.WriteFile(filepath.Join(s.root, f), []byte(f), 0o644))
	}
	must(t, os.Symlink(s.outside, filepath.Join(s.root, "out")))
	must(t, os.Symlink("sub", filepath.Join(s.root, "in")))
	all := []string{"a.txt", "in -> sub", "out -> " + s.outside, "sub/", "sub/b.txt", "sub/deep/", "sub/deep/c.txt"}
	cases := []struct {
		paths []string
		want  []string
	}{
		{nil, all},
		{[]string{"."}, all},
		{[]string{"a.txt"}, []string{"a.txt"}},
		{[]string{"sub"}, all[3:]},
		{[]string{"a.txt", "sub/deep/"}, []string{"a.txt", "sub/deep/", "sub/deep/c.txt"}},
		{[]string{"./sub/../a.txt"}, []string{"a.txt"}},
		{[]string{"out"}, []string{"out -> " + s.outside}}, // a symlink, not followed
		{[]string{"in/b.txt"}, []string{"in/b.txt"}},       // through a symlink that stays inside
	}
	for _, tc := range cases {
		var buf bytes.Buffer
		if err := Archive(context.Background(), &buf, s.root, tc.paths...); err != nil {
			t.Fatalf("%q: %v", tc.paths, err)
		}
		if got := names(t, buf.Bytes()); !slices.Equal(got, tc.want) {
			t.Errorf("%q: entries %q, want %q", tc.paths, got, tc.want)
		}
	}
}

func TestArchivePathErrors(t *testing.T) {
	s := newSandbox(t)
	must(t, os.WriteFile(filepath.Join(s.root, "a.txt"), []byte("a"), 0o644))
	must(t, os.Symlink(s.outside, filepath.Join(s.root, "out")))
	cases := []struct {
		paths []string
		want  error
	}{
		{[]string{"missing"}, fs.ErrNotExist},
		{[]string{"a.txt", "missing"}, fs.ErrNotExist}, // nothing is written, not even a.txt
		{[]string{"../outside/secret"}, ErrUnsafePath},
		{[]string{"a/../../outside"}, ErrUnsafePath},
		{[]string{s.outside + "/secret"}, ErrUnsafePath},
		{[]string{"out/secret"}, ErrUnsafePath},
		{[]string{""}, ErrUnsafePath},
	}
	for _, tc := range cases {
		var buf bytes.Buffer
		err := Archive(context.Background(), &buf, s.root, tc.paths...)
		if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), fmt.Sprintf("%q", tc.paths[len(tc.paths)-1])) {
			t.Errorf("%q: err = %v, want %v naming the path", tc.paths, err, tc.want)
		}
		if buf.Len() != 0 {
			t.Errorf("%q: %d bytes written before the error", tc.paths, buf.Len())
		}
	}
}

func TestArchiveCancelled(t *testing.T) {
	s := newSandbox(t)
	must(t, os.WriteFile(filepath.Join(s.root, "a.txt"), []byte("a"), 0o644))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Archive(ctx, io.Discard, s.root); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
}

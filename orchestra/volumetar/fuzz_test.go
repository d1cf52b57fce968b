package volumetar

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

// addSeeds gives the fuzzers the hostile archives of the refusal table, a
// good archive and truncations of it. Seeds over 4 KiB (the oversized-header
// cases, which the table covers) are left out: every execution touches the
// filesystem, and minimizing a big input would take the fuzzer's whole run.
func addSeeds(f *testing.F) {
	for _, tc := range refusals() {
		if data := tc.archive(f, "../outside"); len(data) <= 4<<10 {
			f.Add(data)
		}
	}
	good := goodArchive(f)
	f.Add(good)
	f.Add(good[:len(good)-512])
	f.Add(good[:700])
	f.Add(tarOf(f, symlinkEnt("up", ".."), reg("up/escaped", "x"), symlinkEnt("a", "b"), symlinkEnt("b", "up")))
}

// FuzzExtract extracts arbitrary bytes into root, a directory inside an
// otherwise empty parent: nothing may appear next to root, and nothing
// unsafe inside it.
func FuzzExtract(f *testing.F) {
	addSeeds(f)
	box := newScratch(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		defer box.reset(t)
		err := Extract(context.Background(), box.root, bytes.NewReader(data))
		if got := listNames(t, box.parent); got != "root" {
			t.Fatalf("Extract (err %v) left %q next to the root", err, got)
		}
		assertSafeTree(t, box.root)
	})
}

// assertSafeTree fails on devices, fifos or set-id files under root.
func assertSafeTree(t *testing.T, root string) {
	t.Helper()
	_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return nil
		}
		if m := fi.Mode(); m&(fs.ModeDevice|fs.ModeCharDevice|fs.ModeNamedPipe|fs.ModeSetuid|fs.ModeSetgid) != 0 {
			t.Fatalf("%s has mode %v", p, m)
		}
		return nil
	})
}

// FuzzCheck: whenever Check passes a stream whole, it forwards it
// unchanged, and Extract into an empty root does not refuse it for a
// name or type rule or as truncated. When Check refuses, it has forwarded
// only a prefix of the stream.
func FuzzCheck(f *testing.F) {
	addSeeds(f)
	box := newScratch(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		out, cerr := io.ReadAll(Check(bytes.NewReader(data)))
		if cerr != nil {
			if !bytes.HasPrefix(data, out) {
				t.Fatal("Check forwarded bytes that are not a prefix of its input")
			}
			return
		}
		if !bytes.Equal(out, data) {
			t.Fatalf("Check passed but forwarded %d of %d bytes", len(out), len(data))
		}
		defer box.reset(t)
		err := Extract(context.Background(), box.root, bytes.NewReader(data))
		if errors.Is(err, ErrUnsafeEntry) || errors.Is(err, ErrTruncated) {
			t.Fatalf("Check passed a stream that Extract refuses: %v", err)
		}
	})
}

// scratch is one fuzz worker's extraction root, inside a parent of its own.
// It is kept between executions while it stays empty (most mutated inputs
// extract nothing): the filesystem is the fuzzers' bottleneck, and Go's
// minimizer runs an interesting input thousands of times.
type scratch struct {
	parent, root string
}

func newScratch(f *testing.F) *scratch {
	parent := f.TempDir()
	s := &scratch{parent, filepath.Join(parent, "root")}
	if err := os.Mkdir(s.root, 0o755); err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { makeRemovable(parent) })
	return s
}

// reset empties the parent but for an empty root.
func (s *scratch) reset(t *testing.T) {
	entries, err := os.ReadDir(s.root)
	if err == nil && len(entries) == 0 && listNames(t, s.parent) == "root" {
		return
	}
	makeRemovable(s.parent)
	if err := os.RemoveAll(s.parent); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(s.root, 0o755); err != nil {
		t.Fatal(err)
	}
}

package volumetar

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

// TestOpenReadAndWriteTo: Open's reader gives the same archive whether it
// is read or copied with io.Copy (its WriteTo, which archives straight into
// the writer); after either, or after Close, nothing more comes; a missing
// path is Open's own error.
func TestOpenReadAndWriteTo(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, body := range map[string]string{"a.txt": "A", "sub/b.txt": "B"} {
		if err := os.WriteFile(filepath.Join(root, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var want bytes.Buffer
	if err := Archive(t.Context(), &want, root); err != nil {
		t.Fatal(err)
	}
	ways := map[string]func(r io.Reader, w io.Writer) (int64, error){
		"Read":    func(r io.Reader, w io.Writer) (int64, error) { return io.Copy(w, struct{ io.Reader }{r}) },
		"WriteTo": func(r io.Reader, w io.Writer) (int64, error) { return io.Copy(w, r) },
		"both": func(r io.Reader, w io.Writer) (int64, error) {
			head := make([]byte, 700)
			n, err := io.ReadFull(r, head)
			if err != nil {
				return int64(n), err
			}
			w.Write(head)
			m, err := io.Copy(w, r)
			return int64(n) + m, err
		},
	}
	for name, copyAll := range ways {
		t.Run(name, func(t *testing.T) {
			rc, err := Open(t.Context(), root)
			if err != nil {
				t.Fatal(err)
			}
			var got bytes.Buffer
			n, err := copyAll(rc, &got)
			if err != nil || n != int64(want.Len()) || !bytes.Equal(got.Bytes(), want.Bytes()) {
				t.Fatalf("%d bytes, %v; want the %d bytes Archive writes", n, err, want.Len())
			}
			if k, err := rc.Read(make([]byte, 10)); k != 0 || err == nil {
				t.Fatalf("Read after the end: %d, %v", k, err)
			}
			if err := rc.Close(); err != nil {
				t.Fatal(err)
			}
		})
	}
	rc, err := Open(t.Context(), root)
	if err != nil {
		t.Fatal(err)
	}
	rc.Close()
	if n, err := io.Copy(io.Discard, rc); n != 0 || err == nil {
		t.Fatalf("io.Copy after Close: %d, %v; want nothing and an error", n, err)
	}
	if _, err := Open(t.Context(), root, "nope"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Open of a missing path: %v; want fs.ErrNotExist", err)
	}
}

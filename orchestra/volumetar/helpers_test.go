package volumetar

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// ent is one entry of a test archive written with archive/tar.
type ent struct {
	h    tar.Header
	body string
}

var testTime = time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)

func reg(name, body string) ent {
	return ent{tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(body)), ModTime: testTime}, body}
}

func dirEnt(name string) ent {
	return ent{h: tar.Header{Name: name, Typeflag: tar.TypeDir, Mode: 0o755, ModTime: testTime}}
}

func symlinkEnt(name, target string) ent {
	return ent{h: tar.Header{Name: name, Typeflag: tar.TypeSymlink, Linkname: target, Mode: 0o777, ModTime: testTime}}
}

func hardlinkEnt(name, target string) ent {
	return ent{h: tar.Header{Name: name, Typeflag: tar.TypeLink, Linkname: target, Mode: 0o644, ModTime: testTime}}
}

// tarOf writes a complete archive of ents.
func tarOf(t testing.TB, ents ...ent) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range ents {
		h := e.h
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatalf("write header %q: %v", h.Name, err)
		}
		if _, err := tw.Write([]byte(e.body)); err != nil {
			t.Fatalf("write body %q: %v", h.Name, err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// rawHeader builds a header block by hand, for headers archive/tar's writer
// will not write (devices with data, sparse types, PAX sparse records).
func rawHeader(name string, typ byte, size int, link string, gnu bool) []byte {
	b := make([]byte, 512)
	copy(b[0:100], name)
	copy(b[100:108], "0000644\x00")
	copy(b[108:116], "0000000\x00")
	copy(b[116:124], "0000000\x00")
	copy(b[124:136], fmt.Sprintf("%011o\x00", size))
	copy(b[136:148], fmt.Sprintf("%011o\x00", testTime.Unix()))
	b[156] = typ
	copy(b[157:257], link)
	if gnu {
		copy(b[257:265], "ustar  \x00")
	} else {
		copy(b[257:265], "ustar\x0000")
	}
	copy(b[148:156], "        ")
	sum := 0
	for _, c := range b {
		sum += int(c)
	}
	copy(b[148:156], fmt.Sprintf("%06o\x00 ", sum))
	return b
}

// rawEntry is a hand-made header followed by data padded to a block.
func rawEntry(name string, typ byte, data []byte) []byte {
	b := rawHeader(name, typ, len(data), "", false)
	b = append(b, data...)
	return append(b, make([]byte, (512-len(data)%512)%512)...)
}

func paxRecord(k, v string) string {
	rest := " " + k + "=" + v + "\n"
	n := len(rest) + 1
	for len(strconv.Itoa(n))+len(rest) != n {
		n++
	}
	return strconv.Itoa(n) + rest
}

func raw(parts ...[]byte) []byte {
	var b []byte
	for _, p := range parts {
		b = append(b, p...)
	}
	return append(b, make([]byte, 1024)...)
}

// sandbox is a temp parent holding the extraction root and a directory
// "outside" it with one file, so escapes can be seen.
type sandbox struct {
	parent, root, outside string
}

func newSandbox(t testing.TB) sandbox {
	t.Helper()
	parent := t.TempDir()
	s := sandbox{parent, filepath.Join(parent, "root"), filepath.Join(parent, "outside")}
	for _, d := range []string{s.root, s.outside} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(s.outside, "secret"), []byte("secret"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { makeRemovable(s.parent) })
	return s
}

// assertUntouched fails if anything outside the root changed.
func (s sandbox) assertUntouched(t testing.TB) {
	t.Helper()
	if got := listNames(t, s.parent); got != "outside root" {
		t.Errorf("parent holds %q, want only outside and root", got)
	}
	if got := listNames(t, s.outside); got != "secret" {
		t.Errorf("outside holds %q, want only secret", got)
	}
	b, err := os.ReadFile(filepath.Join(s.outside, "secret"))
	if err != nil || string(b) != "secret" {
		t.Errorf("outside/secret = %q, %v", b, err)
	}
}

func listNames(t testing.TB, dir string) string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return strings.Join(names, " ")
}

// makeRemovable gives the owner rwx on every directory so the test's
// temporary directory can be removed when not running as root.
func makeRemovable(dir string) {
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			_ = os.Chmod(p, 0o755)
		}
		return nil
	})
}

package qemu

import (
	"archive/tar"
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

type tarEntry struct {
	name, link string
	typ        byte
	mode       int64
	body       string
}

func makeTar(t *testing.T, entries []tarEntry) *bytes.Reader {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Linkname: e.link, Typeflag: e.typ, Mode: e.mode, Size: int64(len(e.body))}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(e.body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return bytes.NewReader(buf.Bytes())
}

// TestUntarConfined: a root filesystem tar unpacks with its files, links
// and modes, and a hostile one never writes outside the root.
func TestUntarConfined(t *testing.T) {
	t.Run("a normal root filesystem", func(t *testing.T) {
		root := t.TempDir()
		err := untar(makeTar(t, []tarEntry{
			{name: "bin/", typ: tar.TypeDir, mode: 0o755},
			{name: "bin/busybox", typ: tar.TypeReg, mode: 0o4755, body: "binary"},
			{name: "bin/sh", typ: tar.TypeSymlink, link: "busybox", mode: 0o777},
			{name: "bin/ls", typ: tar.TypeLink, link: "bin/busybox"},
			{name: "./etc/passwd", typ: tar.TypeReg, mode: 0o644, body: "root:x:0:0::/:/bin/sh\n"},
			{name: "dev/null", typ: tar.TypeChar, mode: 0o666},
		}), root)
		if err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(filepath.Join(root, "bin/busybox"))
		if err != nil || fi.Mode()&os.ModeSetuid == 0 || fi.Mode().Perm() != 0o755 {
			t.Fatalf("bin/busybox: %v %v, want setuid 0755", fi, err)
		}
		if l, _ := os.Readlink(filepath.Join(root, "bin/sh")); l != "busybox" {
			t.Fatalf("bin/sh links to %q", l)
		}
		if data, _ := os.ReadFile(filepath.Join(root, "bin/ls")); string(data) != "binary" {
			t.Fatalf("hard link bin/ls reads %q", data)
		}
		if _, err := os.Stat(filepath.Join(root, "etc/passwd")); err != nil {
			t.Fatal(err)
		}
	})
	hostile := []struct {
		name    string
		entries []tarEntry
	}{
		{"dot-dot entry", []tarEntry{{name: "../escape", typ: tar.TypeReg, mode: 0o644, body: "x"}}},
		{"nested dot-dot entry", []tarEntry{{name: "a/../../escape", typ: tar.TypeReg, mode: 0o644, body: "x"}}},
		{"write through a symlinked directory", []tarEntry{
			{name: "evil", typ: tar.TypeSymlink, link: "/tmp/..", mode: 0o777},
			{name: "evil/escape", typ: tar.TypeReg, mode: 0o644, body: "x"}}},
		{"hard link out of the root", []tarEntry{{name: "l", typ: tar.TypeLink, link: "../../etc/passwd"}}},
	}
	for _, tt := range hostile {
		t.Run(tt.name, func(t *testing.T) {
			parent := t.TempDir()
			root := filepath.Join(parent, "root")
			if err := os.Mkdir(root, 0o755); err != nil {
				t.Fatal(err)
			}
			err := untar(makeTar(t, tt.entries), root)
			if err == nil {
				t.Fatal("untar accepted it")
			}
			if _, serr := os.Stat(filepath.Join(parent, "escape")); serr == nil {
				t.Fatal("a file was written outside the root")
			}
			if !strings.Contains(err.Error(), "unpack") {
				t.Fatalf("error %q does not say what it refused", err)
			}
		})
	}
}

package main

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"syscall"
	"testing"
)

// newRoot makes a directory tree to resolve in: files (with modes) and
// symlinks, some pointing out of the tree the way an image's absolute links
// do.
func newRoot(t *testing.T) (dir string, fd int) {
	t.Helper()
	dir = t.TempDir()
	files := map[string]os.FileMode{
		"bin/tool":     0o755,
		"bin/readonly": 0o644,
		"usr/bin/real": 0o755,
		"etc/passwd":   0o644,
		"etc/group":    0o644,
	}
	for name, mode := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, nil, mode); err != nil {
			t.Fatal(err)
		}
	}
	links := map[string]string{
		"sbin":         "/usr/bin",    // absolute, inside the tree
		"bin/escape":   "/bin/sh",     // the host's /bin/sh, not the tree's
		"etc/outside":  "/etc",        // a directory out of the tree
		"dangling":     "/made/here",  // to be made inside the tree
		"loop":         "/loop",       // ELOOP
		"rel/up":       "../../../..", // ".." stops at the root
		"usr/bin/link": "real",
	}
	for name, target := range links {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(target, p); err != nil {
			t.Fatal(err)
		}
	}
	passwd := "root:x:0:0::/root:/bin/sh\nbuilder:x:1000:1001::/home/b:/bin/sh\n# comment\nbad:x:z:1::/:/bin/sh\n"
	group := "root:x:0:\nbuilders:x:1001:builder\ndocker:x:999:builder,other\nwheel:x:10:other\n"
	if err := os.WriteFile(filepath.Join(dir, "etc/passwd"), []byte(passwd), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "etc/group"), []byte(group), 0o644); err != nil {
		t.Fatal(err)
	}
	fd, err := openRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Close(fd) })
	return dir, fd
}

func TestLookPath(t *testing.T) {
	_, root := newRoot(t)
	tests := []struct {
		name, path, want string
		found            bool
	}{
		{"tool", "/bin:/usr/bin", "/bin/tool", true},
		{"real", "/bin:/sbin", "/sbin/real", true},  // through an absolute link in the tree
		{"link", "/usr/bin", "/usr/bin/link", true}, // a link to an executable
		{"readonly", "/bin", "", false},             // not executable
		{"escape", "/bin", "", false},               // would be the host's /bin/sh
		{"tool", "bin:/usr/bin", "", false},         // relative PATH entries are skipped
		{"./script", "/bin", "./script", true},      // a slash: as given
		{"nothing", "/bin:/usr/bin:/sbin", "", false},
	}
	for _, tt := range tests {
		got, err := lookPath(root, tt.path, tt.name)
		if tt.found && (err != nil || got != tt.want) {
			t.Errorf("lookPath(%q, %q) = %q, %v; want %q", tt.name, tt.path, got, err, tt.want)
		}
		if !tt.found {
			var se *startError
			if !errors.As(err, &se) || se.code != codeNotFound {
				t.Errorf("lookPath(%q, %q) = %q, %v; want not found (127)", tt.name, tt.path, got, err)
			}
		}
	}
}

func TestLookupUser(t *testing.T) {
	_, root := newRoot(t)
	tests := []struct {
		user string
		want *syscall.Credential
		ok   bool
	}{
		{"", nil, true},
		{"root", nil, true},
		{"0", nil, true},
		{"1234", &syscall.Credential{Uid: 1234, Gid: 1234, Groups: []uint32{}}, true},
		{"1234:50", &syscall.Credential{Uid: 1234, Gid: 50, Groups: []uint32{}}, true},
		{"builder", &syscall.Credential{Uid: 1000, Gid: 1001, Groups: []uint32{999}}, true},
		{"nosuch", nil, false},
		{"bad", nil, false},
		{"1:2:3", nil, false},
		{"99999999999", nil, false},
	}
	for _, tt := range tests {
		got, err := lookupUser(root, tt.user)
		if tt.ok != (err == nil) || (tt.ok && !reflect.DeepEqual(got, tt.want)) {
			t.Errorf("lookupUser(%q) = %+v, %v; want %+v (ok %v)", tt.user, got, err, tt.want, tt.ok)
		}
	}
}

func TestMkdirInRoot(t *testing.T) {
	dir, root := newRoot(t)
	tests := []struct {
		name, madeAt string // madeAt: where the directory must exist, in the tree
		ok           bool
	}{
		{"/work/dir", "work/dir", true},
		{"/dangling/x", "made/here/x", true},                // the link's target, made inside
		{"/etc/outside/pocketci-x", "etc/pocketci-x", true}, // /etc of the tree, not the host's
		{"/rel/up/top", "top", true},
		{"/loop/x", "", false},
	}
	for _, tt := range tests {
		fd, err := mkdirInRoot(root, tt.name)
		if !tt.ok {
			if err == nil {
				_ = syscall.Close(fd)
				t.Errorf("mkdirInRoot(%q): no error, want one", tt.name)
			}
			continue
		}
		if err != nil {
			t.Errorf("mkdirInRoot(%q): %v", tt.name, err)
			continue
		}
		_ = syscall.Close(fd)
		if st, err := os.Lstat(filepath.Join(dir, tt.madeAt)); err != nil || !st.IsDir() {
			t.Errorf("mkdirInRoot(%q): %s in the tree: %v", tt.name, tt.madeAt, err)
		}
	}
	if _, err := os.Stat("/etc/pocketci-x"); err == nil {
		t.Error("a directory was made in the host's /etc")
	}
}

package qemu

import (
	"path"
	"regexp"
	"strings"
	"testing"

	"github.com/jtarchie/pocketci/orchestra"
)

var safeElement = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)

// FuzzTaskNames checks the names the driver makes on the host from a
// namespace, a task ID and a mount path that orchestra.ValidateTask
// accepts: the task's directory is one safe path element of at most 100
// bytes, two different IDs never share it, and a mount's link stays inside
// the task's working directory.
func FuzzTaskNames(f *testing.F) {
	for _, s := range [][3]string{{"ns", "task", "/data"}, {"ns", "_nano", "cache"}, {"ns", "-x", "a/b"}, {"n s", "ü", "./x"},
		{"ns", strings.Repeat("x", 250), "/a/./b/"}, {"ns", "a/b", "c"}, {"ns", "a b", "c"}, {"ns", "t", "..000"}} {
		f.Add(s[0], s[1], s[2])
	}
	f.Fuzz(func(t *testing.T, ns, id, mount string) {
		task := orchestra.Task{ID: id, Command: []string{"true"}, Mounts: orchestra.Mounts{{Name: "v", Path: mount}}}
		if orchestra.ValidateNamespace(ns) != nil || validate(task) != nil {
			return
		}
		name := orchestra.SafeName(orchestra.PathNameRule, ns, id)
		if !safeElement.MatchString(name) || len(name) > 100 {
			t.Fatalf("task dir for %q/%q = %q: not a safe path element of at most 100 bytes", ns, id, name)
		}
		if other := orchestra.SafeName(orchestra.PathNameRule, ns, id+"x"); other == name {
			t.Fatalf("IDs %q and %q share the directory %q", id, id+"x", name)
		}
		rel := mountRel(mount)
		if c := path.Clean(rel); rel == "" || path.IsAbs(rel) || c == "." || c == ".." || strings.HasPrefix(c, "../") {
			t.Fatalf("mount %q links at %q, outside the working directory", mount, rel)
		}
	})
}

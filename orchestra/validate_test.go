package orchestra

import (
	"errors"
	"strings"
	"testing"
)

func TestValidateTask(t *testing.T) {
	good := func() Task {
		return Task{ID: "build-1.step_2", Command: []string{"sh", "-c", "echo hi"}, Env: map[string]string{"A": "x=y"},
			Mounts: Mounts{{Name: "cache", Path: "/cache"}, {Name: "src", Path: "/work/src"}}, Image: "busybox:latest"}
	}
	if err := ValidateTask(good()); err != nil {
		t.Fatalf("a good task: %v", err)
	}
	tests := []struct {
		name  string
		edit  func(*Task)
		field string
	}{
		{"empty ID", func(t *Task) { t.ID = "" }, "task ID is empty"},
		{"long ID", func(t *Task) { t.ID = strings.Repeat("a", MaxIDLen+1) }, "longer than"},
		{"ID with slash", func(t *Task) { t.ID = "a/b" }, "task ID"},
		{"ID with space", func(t *Task) { t.ID = "a b" }, "task ID"},
		{"ID with unicode", func(t *Task) { t.ID = "tâche" }, "task ID"},
		{"ID with control", func(t *Task) { t.ID = "a\nb" }, "task ID"},
		{"ID starting with dot", func(t *Task) { t.ID = ".hidden" }, "task ID"},
		{"empty command", func(t *Task) { t.Command = nil }, "Command is empty"},
		{"empty program", func(t *Task) { t.Command = []string{""} }, "Command is empty"},
		{"NUL in argument", func(t *Task) { t.Command = []string{"echo", "a\x00b"} }, "Command[1]"},
		{"env key with =", func(t *Task) { t.Env = map[string]string{"A=B": "x"} }, "Env key"},
		{"env key with NUL", func(t *Task) { t.Env = map[string]string{"A\x00": "x"} }, "Env key"},
		{"empty env key", func(t *Task) { t.Env = map[string]string{"": "x"} }, "empty key"},
		{"env value with NUL", func(t *Task) { t.Env = map[string]string{"A": "\x00"} }, "Env value"},
		{"relative mount", func(t *Task) { t.Mounts = Mounts{{Name: "v", Path: "data"}} }, "Mounts[0].Path"},
		{"dot-dot mount", func(t *Task) { t.Mounts = Mounts{{Name: "v", Path: "/a/../b"}} }, "contains .."},
		{"unclean mount", func(t *Task) { t.Mounts = Mounts{{Name: "v", Path: "/a//b"}} }, "not clean"},
		{"root mount", func(t *Task) { t.Mounts = Mounts{{Name: "v", Path: "/"}} }, "root directory"},
		{"duplicate mount path", func(t *Task) { t.Mounts = Mounts{{Name: "v", Path: "/a"}, {Name: "w", Path: "/a"}} }, "mounted twice"},
		{"bad volume name", func(t *Task) { t.Mounts = Mounts{{Name: "../etc", Path: "/a"}} }, "Mounts[0].Name"},
		{"negative CPU", func(t *Task) { t.ContainerLimits.CPU = -1 }, "ContainerLimits.CPU"},
		{"negative memory", func(t *Task) { t.ContainerLimits.Memory = -1 }, "ContainerLimits.Memory"},
		{"image with space", func(t *Task) { t.Image = "busy box" }, "Image"},
		{"user with newline", func(t *Task) { t.User = "root\n" }, "User"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			task := good()
			tt.edit(&task)
			err := ValidateTask(task)
			if !errors.Is(err, ErrInvalidTask) {
				t.Fatalf("ValidateTask = %v, want ErrInvalidTask", err)
			}
			if !strings.Contains(err.Error(), tt.field) {
				t.Fatalf("error %q does not name %q", err, tt.field)
			}
		})
	}
}

func TestValidateNamespace(t *testing.T) {
	for _, ns := range []string{"a", "ct-happy-path-1a2b3c", "Run_1.x"} {
		if err := ValidateNamespace(ns); err != nil {
			t.Errorf("ValidateNamespace(%q) = %v", ns, err)
		}
	}
	for _, ns := range []string{"", "-a", "a/b", "a b", "ü", strings.Repeat("n", MaxNamespaceLen+1), "a\x00"} {
		if err := ValidateNamespace(ns); !errors.Is(err, ErrInvalidTask) || !strings.Contains(err.Error(), "namespace") {
			t.Errorf("ValidateNamespace(%q) = %v, want an error naming the namespace", ns, err)
		}
	}
}

// FuzzValidateTask checks that the validator never panics and that what it
// accepts is safe to turn into a path and an argv.
func FuzzValidateTask(f *testing.F) {
	f.Add("id-1", "sh", "KEY", "value", "vol", "/mnt/x", int64(0))
	f.Add("a/b", "", "K=V", "\x00", "../x", "rel", int64(-1))
	f.Add("ü", "echo", "", "", "v", "/a/../b", int64(5))
	f.Fuzz(func(t *testing.T, id, cmd, key, value, vol, mount string, mem int64) {
		task := Task{ID: id, Command: []string{cmd}, Env: map[string]string{key: value},
			Mounts: Mounts{{Name: vol, Path: mount}}, ContainerLimits: ContainerLimits{Memory: mem}}
		if err := ValidateTask(task); err != nil {
			if !errors.Is(err, ErrInvalidTask) {
				t.Fatalf("error %v does not wrap ErrInvalidTask", err)
			}
			return
		}
		if strings.ContainsAny(id, "/ \x00") || id == "." || id == ".." || strings.HasPrefix(id, "-") {
			t.Fatalf("accepted unsafe ID %q", id)
		}
		if strings.Contains(mount, "..") && containsDotDot(mount) || !strings.HasPrefix(mount, "/") {
			t.Fatalf("accepted unsafe mount path %q", mount)
		}
		if strings.ContainsAny(key, "=\x00") || key == "" || mem < 0 || cmd == "" {
			t.Fatalf("accepted bad task %+v", task)
		}
	})
}

func FuzzValidateNamespace(f *testing.F) {
	for _, s := range []string{"ns", "a/b", "", "..", "ü"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, ns string) {
		if ValidateNamespace(ns) != nil {
			return
		}
		if ns == "" || len(ns) > MaxNamespaceLen || strings.ContainsAny(ns, "/ \x00\n") || ns[0] == '.' || ns[0] == '-' {
			t.Fatalf("accepted unsafe namespace %q", ns)
		}
	})
}

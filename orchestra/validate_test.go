package orchestra

import (
	"errors"
	"path"
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
		{"NUL in ID", func(t *Task) { t.ID = "a\x00b" }, "contains a NUL byte"},
		{"empty command", func(t *Task) { t.Command = nil }, "Command is empty"},
		{"empty program", func(t *Task) { t.Command = []string{""} }, "Command is empty"},
		{"NUL in argument", func(t *Task) { t.Command = []string{"echo", "a\x00b"} }, "Command[1]"},
		{"env key with =", func(t *Task) { t.Env = map[string]string{"A=B": "x"} }, "Env key"},
		{"env key with NUL", func(t *Task) { t.Env = map[string]string{"A\x00": "x"} }, "Env key"},
		{"empty env key", func(t *Task) { t.Env = map[string]string{"": "x"} }, "empty key"},
		{"env value with NUL", func(t *Task) { t.Env = map[string]string{"A": "\x00"} }, "Env value"},
		{"empty mount path", func(t *Task) { t.Mounts = Mounts{{Name: "v", Path: ""}} }, "Mounts[0].Path is empty"},
		{"relative dot-dot mount", func(t *Task) { t.Mounts = Mounts{{Name: "v", Path: "../x"}} }, "contains .."},
		{"working dir mount", func(t *Task) { t.Mounts = Mounts{{Name: "v", Path: "./"}} }, "working directory"},
		{"control in mount", func(t *Task) { t.Mounts = Mounts{{Name: "v", Path: "/a\nb"}} }, "control characters"},
		{"duplicate relative mount path", func(t *Task) { t.Mounts = Mounts{{Name: "v", Path: "a"}, {Name: "w", Path: "./a"}} }, "mounted twice"},
		{"dot-dot mount", func(t *Task) { t.Mounts = Mounts{{Name: "v", Path: "/a/../b"}} }, "contains .."},
		{"root mount", func(t *Task) { t.Mounts = Mounts{{Name: "v", Path: "//"}} }, "root or working directory"},
		{"duplicate mount path", func(t *Task) { t.Mounts = Mounts{{Name: "v", Path: "/a"}, {Name: "w", Path: "/a"}} }, "mounted twice"},
		{"empty volume name", func(t *Task) { t.Mounts = Mounts{{Name: "", Path: "/a"}} }, "Mounts[0].Name is empty"},
		{"NUL in volume name", func(t *Task) { t.Mounts = Mounts{{Name: "a\x00", Path: "/a"}} }, "Mounts[0].Name"},
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

// TestValidateTaskAccepts lists what pocketci's runtime and tests pass:
// none of it may be refused, in process or through a plugin.
func TestValidateTaskAccepts(t *testing.T) {
	tests := []struct {
		name string
		edit func(*Task)
	}{
		{"nanoid ID starting with _", func(t *Task) { t.ID = "_V1StGXR8_Z5jdHi6B-myT" }},
		{"nanoid ID starting with -", func(t *Task) { t.ID = "-V1StGXR8_Z5jdHi6B-myT" }},
		{"ID with spaces", func(t *Task) { t.ID = "build job/compile step" }},
		{"unicode ID", func(t *Task) { t.ID = "tâche-编译" }},
		{"long ID", func(t *Task) { t.ID = strings.Repeat("a", 300) }},
		{"ID with a newline", func(t *Task) { t.ID = "a\nb" }},
		{"relative mount", func(t *Task) { t.Mounts = Mounts{{Name: "v", Path: "data"}} }},
		{"relative and absolute", func(t *Task) { t.Mounts = Mounts{{Name: "v", Path: "/a"}, {Name: "w", Path: "a"}} }},
		{"unclean mount", func(t *Task) { t.Mounts = Mounts{{Name: "v", Path: "/a//b/"}} }},
		{"volume name with spaces", func(t *Task) { t.Mounts = Mounts{{Name: "my cache", Path: "/c"}} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			task := Task{ID: "x", Command: []string{"true"}}
			tt.edit(&task)
			if err := ValidateTask(task); err != nil {
				t.Fatalf("ValidateTask = %v, want nil", err)
			}
		})
	}
}

func TestValidateNamespace(t *testing.T) {
	for _, ns := range []string{"a", "ct-happy-path-1a2b3c", "Run_1.x", "-a", "a/b", "ü"} {
		if err := ValidateNamespace(ns); err != nil {
			t.Errorf("ValidateNamespace(%q) = %v", ns, err)
		}
	}
	for _, ns := range []string{"", "a\x00"} {
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
		if id == "" || strings.ContainsRune(id, 0) {
			t.Fatalf("accepted unusable ID %q", id)
		}
		if containsDotDot(mount) || path.Clean(mount) == "/" || path.Clean(mount) == "." {
			t.Fatalf("accepted unsafe mount path %q", mount)
		}
		if got := MountPath("/work", mount); !strings.HasPrefix(got, "/") || containsDotDot(got) {
			t.Fatalf("MountPath(%q) = %q", mount, got)
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
		if ns == "" || strings.ContainsRune(ns, 0) {
			t.Fatalf("accepted unusable namespace %q", ns)
		}
	})
}

func TestValidateSandboxTaskAndExec(t *testing.T) {
	if err := ValidateSandboxTask(Task{ID: "sb", Image: "busybox"}); err != nil {
		t.Fatalf("a sandbox without a command: %v", err)
	}
	if err := ValidateSandboxTask(Task{ID: "sb", WorkDir: "../up"}); !errors.Is(err, ErrInvalidTask) {
		t.Fatalf("a sandbox with WorkDir ..: %v, want ErrInvalidTask", err)
	}
	if err := ValidateExec([]string{"ls", "-l"}, map[string]string{"A": "b"}, "/work"); err != nil {
		t.Fatalf("a good exec: %v", err)
	}
	for _, tt := range []struct {
		name    string
		cmd     []string
		env     map[string]string
		workDir string
		names   string
	}{
		{"no command", nil, nil, "", "command is empty"},
		{"empty first argument", []string{""}, nil, "", "command is empty"},
		{"NUL in an argument", []string{"ls", "a\x00b"}, nil, "", "argument 1"},
		{"empty env key", []string{"ls"}, map[string]string{"": "x"}, "", "env key"},
		{"= in an env key", []string{"ls"}, map[string]string{"A=B": "x"}, "", "env key"},
		{"NUL in an env value", []string{"ls"}, map[string]string{"A": "\x00"}, "", "env key"},
		{"NUL in workDir", []string{"ls"}, nil, "/a\x00", "workDir"},
	} {
		err := ValidateExec(tt.cmd, tt.env, tt.workDir)
		if !errors.Is(err, ErrInvalidTask) || !strings.Contains(err.Error(), tt.names) {
			t.Errorf("%s: %v, want ErrInvalidTask naming %q", tt.name, err, tt.names)
		}
	}
}

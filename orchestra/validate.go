package orchestra

import (
	"fmt"
	"path"
	"strings"
)

// ValidateNamespace reports whether namespace is usable: not empty and
// without NUL bytes. Drivers turn it into a platform name with SafeName.
// The error wraps ErrInvalidTask and names the problem.
func ValidateNamespace(namespace string) error {
	return validateName("namespace", namespace)
}

// ValidateVolumeName reports whether name is a usable volume name; the rules
// are those of a task ID.
func ValidateVolumeName(name string) error {
	return validateName("volume name", name)
}

// ValidateTaskID reports whether id is a usable task ID: any non-empty
// string without NUL bytes. pocketci's runtime builds IDs from job and task
// names and its tests use nanoid IDs, which may start with '_' or '-';
// drivers make platform names from them with SafeName.
func ValidateTaskID(id string) error {
	return validateName("task ID", id)
}

// ValidateTask checks a task before it reaches a driver. Drivers call it
// in RunContainer, and the plugin host calls it before a task crosses the
// wire, so a task is accepted or refused the same way in process and
// through a plugin. Each error wraps ErrInvalidTask and names the field
// that is wrong:
//   - ID: not empty, no NUL bytes;
//   - Command: at least one element, the first not empty, no NUL bytes;
//   - Env: keys not empty, without '=' or NUL; values without NUL;
//   - Mounts: valid volume names; paths absolute or relative to the working
//     directory (see MountPath), not empty, not "/" or ".", without ".." or
//     control characters, each path once;
//   - Mounts[i].SizeGB and ContainerLimits: not negative; CPUKind without
//     whitespace or control characters;
//   - WorkDir: empty, or a path without ".." or control characters;
//   - Image and User: no whitespace or control characters.
func ValidateTask(task Task) error {
	if err := ValidateTaskID(task.ID); err != nil {
		return err
	}
	if len(task.Command) == 0 || task.Command[0] == "" {
		return invalid("task %q: Command is empty", task.ID)
	}
	for i, arg := range task.Command {
		if strings.ContainsRune(arg, 0) {
			return invalid("task %q: Command[%d] contains a NUL byte", task.ID, i)
		}
	}
	for k, v := range task.Env {
		switch {
		case k == "":
			return invalid("task %q: Env has an empty key", task.ID)
		case strings.ContainsAny(k, "=\x00"):
			return invalid("task %q: Env key %q contains '=' or a NUL byte", task.ID, k)
		case strings.ContainsRune(v, 0):
			return invalid("task %q: Env value of %q contains a NUL byte", task.ID, k)
		}
	}
	seen := map[string]bool{}
	for i, m := range task.Mounts {
		if err := validateName(fmt.Sprintf("task %q: Mounts[%d].Name", task.ID, i), m.Name); err != nil {
			return err
		}
		p := m.Path
		clean := path.Clean(p)
		switch {
		case p == "":
			return invalid("task %q: Mounts[%d].Path is empty", task.ID, i)
		case hasControl(p):
			return invalid("task %q: Mounts[%d].Path %q contains control characters", task.ID, i, p)
		case containsDotDot(p):
			return invalid("task %q: Mounts[%d].Path %q contains ..", task.ID, i, p)
		case clean == "/" || clean == ".":
			return invalid("task %q: Mounts[%d].Path %q is the root or working directory itself", task.ID, i, p)
		case seen[clean]:
			return invalid("task %q: Mounts[%d].Path %q is mounted twice", task.ID, i, p)
		}
		if m.SizeGB < 0 {
			return invalid("task %q: Mounts[%d].SizeGB %d is negative", task.ID, i, m.SizeGB)
		}
		seen[clean] = true
	}
	if w := task.WorkDir; hasControl(w) || containsDotDot(w) {
		return invalid("task %q: WorkDir %q contains .. or control characters", task.ID, w)
	}
	if k := task.ContainerLimits.CPUKind; strings.ContainsAny(k, " \t\n") || hasControl(k) {
		return invalid("task %q: ContainerLimits.CPUKind %q contains whitespace or control characters", task.ID, k)
	}
	if task.ContainerLimits.CPU < 0 {
		return invalid("task %q: ContainerLimits.CPU %d is negative", task.ID, task.ContainerLimits.CPU)
	}
	if task.ContainerLimits.Memory < 0 {
		return invalid("task %q: ContainerLimits.Memory %d is negative", task.ID, task.ContainerLimits.Memory)
	}
	if strings.ContainsAny(task.Image, " \t\n") || hasControl(task.Image) {
		return invalid("task %q: Image %q contains whitespace or control characters", task.ID, task.Image)
	}
	if strings.ContainsAny(task.User, " \t\n") || hasControl(task.User) {
		return invalid("task %q: User %q contains whitespace or control characters", task.ID, task.User)
	}
	return nil
}

// ValidateSandboxTask checks the task of a sandbox as ValidateTask does,
// except that its Command may be empty: a sandbox runs only what Exec gives
// it.
func ValidateSandboxTask(task Task) error {
	if len(task.Command) == 0 {
		task.Command = []string{"sandbox"}
	}
	return ValidateTask(task)
}

// ValidateExec checks a Sandbox.Exec's arguments before they reach a
// driver: cmd not empty, its first element not empty, no NUL bytes in cmd,
// env or workDir; env keys not empty and without '='. Each error wraps
// ErrInvalidTask.
func ValidateExec(cmd []string, env map[string]string, workDir string) error {
	if len(cmd) == 0 || cmd[0] == "" {
		return invalid("the command is empty")
	}
	for i, a := range cmd {
		if strings.ContainsRune(a, 0) {
			return invalid("the command's argument %d contains a NUL byte", i)
		}
	}
	for k, v := range env {
		if k == "" || strings.ContainsAny(k, "=\x00") || strings.ContainsRune(v, 0) {
			return invalid("env key %q: empty, or with '=' or NUL", k)
		}
	}
	if strings.ContainsRune(workDir, 0) {
		return invalid("workDir contains a NUL byte")
	}
	return nil
}

func validateName(what, s string) error {
	switch {
	case s == "":
		return invalid("%s is empty", what)
	case strings.IndexByte(s, 0) >= 0:
		return invalid("%s %q contains a NUL byte", what, s)
	}
	return nil
}

func containsDotDot(p string) bool {
	for _, part := range strings.Split(p, "/") {
		if part == ".." {
			return true
		}
	}
	return false
}

func hasControl(s string) bool {
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return true
		}
	}
	return false
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalidTask}, args...)...)
}

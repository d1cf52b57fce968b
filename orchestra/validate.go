package orchestra

import (
	"fmt"
	"path"
	"strings"
)

// Limits on names, checked by ValidateNamespace and ValidateTask.
const (
	// MaxNamespaceLen is the longest namespace accepted.
	MaxNamespaceLen = 64
	// MaxIDLen is the longest task ID or volume name accepted.
	MaxIDLen = 128
)

// ValidateNamespace reports whether namespace is usable on every platform:
// 1 to MaxNamespaceLen characters from [A-Za-z0-9._-], starting with a
// letter or digit. The error wraps ErrInvalidTask and names the problem.
func ValidateNamespace(namespace string) error {
	return validateName("namespace", namespace, MaxNamespaceLen)
}

// ValidateVolumeName reports whether name is a usable volume name; the rules
// are those of a task ID.
func ValidateVolumeName(name string) error {
	return validateName("volume name", name, MaxIDLen)
}

// ValidateTaskID reports whether id is a usable task ID: 1 to MaxIDLen
// characters from [A-Za-z0-9._-], starting with a letter or digit.
func ValidateTaskID(id string) error {
	return validateName("task ID", id, MaxIDLen)
}

// ValidateTask checks a task before it reaches a driver. Each error wraps
// ErrInvalidTask and names the field that is wrong:
//   - ID: 1 to MaxIDLen characters from [A-Za-z0-9._-], starting with a letter or digit;
//   - Command: at least one element, the first not empty, no NUL bytes;
//   - Env: keys not empty, without '=' or NUL; values without NUL;
//   - Mounts: valid volume names, absolute clean paths other than "/", without "..", each path once;
//   - ContainerLimits: not negative;
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
		if err := validateName(fmt.Sprintf("task %q: Mounts[%d].Name", task.ID, i), m.Name, MaxIDLen); err != nil {
			return err
		}
		p := m.Path
		switch {
		case !path.IsAbs(p):
			return invalid("task %q: Mounts[%d].Path %q is not absolute", task.ID, i, p)
		case strings.ContainsRune(p, 0) || hasControl(p):
			return invalid("task %q: Mounts[%d].Path %q contains control characters", task.ID, i, p)
		case containsDotDot(p):
			return invalid("task %q: Mounts[%d].Path %q contains ..", task.ID, i, p)
		case path.Clean(p) != p:
			return invalid("task %q: Mounts[%d].Path %q is not clean (want %q)", task.ID, i, p, path.Clean(p))
		case p == "/":
			return invalid("task %q: Mounts[%d].Path is the root directory", task.ID, i)
		case seen[p]:
			return invalid("task %q: Mounts[%d].Path %q is mounted twice", task.ID, i, p)
		}
		seen[p] = true
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

func validateName(what, s string, max int) error {
	switch {
	case s == "":
		return invalid("%s is empty", what)
	case len(s) > max:
		return invalid("%s %.20q... is %d bytes, longer than %d", what, s, len(s), max)
	}
	for i, r := range s {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || (i > 0 && (r == '.' || r == '_' || r == '-'))
		if !ok {
			return invalid("%s %q: character %q at byte %d is not allowed (want [A-Za-z0-9._-], starting with a letter or digit)", what, s, r, i)
		}
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

package orchestra

import (
	"crypto/sha256"
	"encoding/hex"
	"path"
	"strings"
)

// A NameRule describes the resource names a platform accepts. SafeName uses
// it to turn a namespace and a task ID (or volume name) into such a name.
type NameRule struct {
	// MaxLen is the longest name the platform accepts, in bytes (at least 16).
	MaxLen int
	// Allowed reports whether byte c may appear in a name as it is.
	Allowed func(c byte) bool
	// Replace stands in for every byte that Allowed refuses.
	Replace byte
	// Lower folds A-Z to a-z before Allowed is asked (DNS names).
	Lower bool
	// AlnumEnd requires the name to end with a letter or digit (DNS names).
	AlnumEnd bool
}

// Common rules. Every rule also requires a name to start with a letter or
// digit.
var (
	// PathNameRule gives a single file-name element: [A-Za-z0-9._-], at most
	// 100 bytes, never "." or "..".
	PathNameRule = NameRule{MaxLen: 100, Allowed: isPathByte, Replace: '_'}
	// DockerNameRule gives a Docker container or volume name:
	// [a-zA-Z0-9][a-zA-Z0-9_.-]*, at most 200 bytes.
	DockerNameRule = NameRule{MaxLen: 200, Allowed: isPathByte, Replace: '_'}
	// DNSLabelRule gives an RFC 1123 label, as Kubernetes wants for pod and
	// volume names: [a-z0-9-], starting and ending alphanumeric, at most 63
	// bytes.
	DNSLabelRule = NameRule{MaxLen: 63, Allowed: isDNSByte, Replace: '-', Lower: true, AlnumEnd: true}
)

// hashLen is the length of the suffix SafeName adds: '-' and 8 hex digits.
const hashLen = 9

// SafeName joins parts with "-" (typically namespace and task ID) and makes
// the result a name that rule accepts. When that changed the joined name
// (a byte replaced, a prefix added, case folded, or the name cut to
// MaxLen), a short hash of the joined name is appended, so two different
// inputs never map to the same name. A name that needed no change is
// returned as it is.
func SafeName(rule NameRule, parts ...string) string {
	raw := strings.Join(parts, "-")
	var b strings.Builder
	b.Grow(len(raw) + hashLen + 1)
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		if rule.Lower && c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		if !rule.Allowed(c) {
			c = rule.Replace
		}
		if b.Len() == 0 && !isAlnum(c) {
			b.WriteByte('x')
		}
		b.WriteByte(c)
	}
	name := b.String()
	if name == raw && len(name) <= rule.MaxLen && (name != "") && (!rule.AlnumEnd || isAlnum(name[len(name)-1])) {
		return name
	}
	sum := sha256.Sum256([]byte(raw))
	if max := rule.MaxLen - hashLen; len(name) > max {
		name = name[:max]
	}
	if rule.AlnumEnd {
		name = strings.TrimRightFunc(name, func(r rune) bool { return r > 0x7f || !isAlnum(byte(r)) })
	}
	if name == "" {
		name = "x"
	}
	return name + "-" + hex.EncodeToString(sum[:4])
}

// MountPath is where a mount at p is reached from a task whose working
// directory is workdir: p itself when absolute, else workdir/p. pocketci's
// runtime passes relative paths (resource names); the guide's tests pass
// absolute ones and reach them as ./<path> from the working directory.
func MountPath(workdir, p string) string {
	if path.IsAbs(p) {
		return path.Clean(p)
	}
	return path.Join(workdir, p)
}

// WorkingDir is the directory a task's command starts in, given the task's
// default working directory: workdir itself when the task sets no WorkDir,
// else WorkDir as MountPath places it. Relative mounts stay relative to the
// default working directory, so a task can run inside one of its inputs
// (WorkDir "repo" with a mount at "repo").
func WorkingDir(defaultDir string, task Task) string {
	if task.WorkDir == "" {
		return defaultDir
	}
	return MountPath(defaultDir, task.WorkDir)
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

func isPathByte(c byte) bool { return isAlnum(c) || c == '.' || c == '_' || c == '-' }

func isDNSByte(c byte) bool { return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' }

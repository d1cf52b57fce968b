package qemu

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
)

// maxName bounds a sanitized name (it becomes a directory name).
const maxName = 100

// sanitize makes s safe as a single path element: [A-Za-z0-9_.-] only, no
// leading dot, at most maxName bytes. When that changed s, a short hash of
// the original is appended so two different inputs never collide.
func sanitize(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '_', r == '-', r == '.':
			b.WriteRune(r)
		default:
			b.WriteByte('-')
		}
	}
	out := b.String()
	if strings.HasPrefix(out, ".") {
		out = "_" + out[1:]
	}
	if out == s && len(out) <= maxName && out != "" {
		return out
	}
	sum := sha256.Sum256([]byte(s))
	suffix := hex.EncodeToString(sum[:4])
	if len(out) > maxName-len(suffix)-1 {
		out = out[:maxName-len(suffix)-1]
	}
	return out + "-" + suffix
}

// containerName is {namespace}-{taskID}, sanitized.
func containerName(namespace, taskID string) string {
	return sanitize(namespace + "-" + taskID)
}

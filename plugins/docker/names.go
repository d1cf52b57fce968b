package docker

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
)

// Labels put on every container and volume the driver creates.
const (
	// LabelNamespace holds the driver's namespace.
	LabelNamespace = "pocketci.namespace"
	// LabelTaskID holds the task ID a container runs.
	LabelTaskID = "pocketci.task-id"
	// LabelVolume holds the volume name as given to CreateVolume or a Mount.
	LabelVolume = "pocketci.volume"
)

// maxNameLen bounds generated names. Docker accepts longer names, but
// volume names become directory names under the engine's data root.
const maxNameLen = 200

// dockerName turns "{namespace}-{suffix}" into a valid Docker container or
// volume name ([a-zA-Z0-9][a-zA-Z0-9_.-]*). When the raw name had to change
// (invalid characters replaced, a prefix added, or truncation), a short hash
// of the raw name is appended so that two different raw names never map to
// the same Docker name.
func dockerName(namespace, suffix string) string {
	raw := namespace + "-" + suffix
	var b strings.Builder
	b.Grow(len(raw) + 10)
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
			b.WriteByte(c)
		case (c == '_' || c == '.' || c == '-') && b.Len() > 0:
			b.WriteByte(c)
		case b.Len() == 0:
			// The first character must be alphanumeric.
			b.WriteString("x")
			if c == '_' || c == '.' || c == '-' {
				b.WriteByte(c)
			}
		default:
			b.WriteByte('_')
		}
	}
	name := b.String()
	if name == raw && len(name) <= maxNameLen {
		return name
	}
	sum := sha256.Sum256([]byte(raw))
	hash := hex.EncodeToString(sum[:4])
	if len(name) > maxNameLen-len(hash)-1 {
		name = name[:maxNameLen-len(hash)-1]
	}
	return name + "-" + hash
}

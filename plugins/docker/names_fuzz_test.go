package docker

import (
	"crypto/sha256"
	"encoding/hex"
	"regexp"
	"strings"
	"testing"
)

var validDockerName = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]*$`)

// FuzzDockerName checks that every name the driver makes is valid for
// Docker, bounded, and either the raw name itself or tagged with the raw
// name's hash, so that sanitizing never makes two task IDs collide.
func FuzzDockerName(f *testing.F) {
	for _, s := range [][2]string{{"ns", "task"}, {"ns", "a/b c"}, {"", ""}, {"-x", ".y"}, {"ns", strings.Repeat("z", 300)}, {"ns", "tâche"}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, namespace, suffix string) {
		name := dockerName(namespace, suffix)
		if !validDockerName.MatchString(name) || len(name) > maxNameLen {
			t.Fatalf("dockerName(%q, %q) = %q: not a valid Docker name of at most %d bytes", namespace, suffix, name, maxNameLen)
		}
		if name != dockerName(namespace, suffix) {
			t.Fatal("dockerName is not deterministic")
		}
		raw := namespace + "-" + suffix
		if name == raw {
			return
		}
		sum := sha256.Sum256([]byte(raw))
		if !strings.HasSuffix(name, "-"+hex.EncodeToString(sum[:4])) {
			t.Fatalf("dockerName(%q, %q) = %q changed the name without tagging it with its hash", namespace, suffix, name)
		}
	})
}

package docker

import (
	"crypto/sha256"
	"encoding/hex"
	"regexp"
	"strings"
	"testing"

	"github.com/jtarchie/pocketci/orchestra"
)

var validDockerName = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]*$`)

// FuzzDockerName checks that every container and volume name the driver
// makes is valid for Docker, bounded, deterministic, and either the raw
// "{namespace}-{id}" itself or tagged with its hash, so that sanitizing never
// makes two task IDs (or volume names) collide.
func FuzzDockerName(f *testing.F) {
	for _, s := range [][2]string{{"ns", "task"}, {"ns", "a/b c"}, {"", ""}, {"-x", ".y"}, {"ns", "_lead"}, {"ns", "-lead"},
		{"ns", strings.Repeat("z", 300)}, {"ns", "tâche"}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, namespace, id string) {
		for _, name := range []string{containerName(namespace, id), volumeName(namespace, id)} {
			if !validDockerName.MatchString(name) || len(name) > orchestra.DockerNameRule.MaxLen {
				t.Fatalf("name for (%q, %q) = %q: not a valid Docker name of at most %d bytes", namespace, id, name, orchestra.DockerNameRule.MaxLen)
			}
			raw := namespace + "-" + id
			if name == raw {
				continue
			}
			sum := sha256.Sum256([]byte(raw))
			if !strings.HasSuffix(name, "-"+hex.EncodeToString(sum[:4])) {
				t.Fatalf("name for (%q, %q) = %q changed the raw name without tagging it with its hash", namespace, id, name)
			}
		}
		if containerName(namespace, id) != containerName(namespace, id) {
			t.Fatal("containerName is not deterministic")
		}
	})
}

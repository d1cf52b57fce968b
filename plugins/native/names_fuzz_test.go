//go:build linux

package native

import (
	"crypto/sha256"
	"encoding/hex"
	"regexp"
	"strings"
	"testing"
)

var safeElement = regexp.MustCompile(`^[A-Za-z0-9_-][A-Za-z0-9_.-]*$`)

// FuzzSanitize checks that sanitize always gives one safe path element
// (never "", ".", ".." or a hidden name), bounded, and either its input or
// tagged with the input's hash, so two task IDs never share a directory.
func FuzzSanitize(f *testing.F) {
	for _, s := range []string{"task", "", ".", "..", "a/b", "../../etc", strings.Repeat("x", 100), "ü", "volumes"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out := sanitize(s)
		if !safeElement.MatchString(out) || len(out) > 64+9 {
			t.Fatalf("sanitize(%q) = %q: not a safe path element", s, out)
		}
		if out == s {
			return
		}
		sum := sha256.Sum256([]byte(s))
		if !strings.HasSuffix(out, "-"+hex.EncodeToString(sum[:4])) {
			t.Fatalf("sanitize(%q) = %q changed the name without tagging it with its hash", s, out)
		}
	})
}

package qemu

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
// tagged with the input's hash, so two inputs never collide.
func FuzzSanitize(f *testing.F) {
	for _, s := range []string{"ns-task", "", ".", "..", "a/b", "../../etc", strings.Repeat("x", 200), "ü"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out := sanitize(s)
		if !safeElement.MatchString(out) || len(out) > maxName {
			t.Fatalf("sanitize(%q) = %q: not a safe path element of at most %d bytes", s, out, maxName)
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

package conformance

import (
	"regexp"
	"testing"
)

func TestNewNamespace(t *testing.T) {
	valid := regexp.MustCompile(`^ct-[a-z0-9]+(-[a-z0-9]+)*-[0-9a-f]{6}$`)
	names := []string{"happy path", "status after done is stable", "A/B..C", "", "---", "日本語 case"}
	for _, c := range Cases() {
		names = append(names, c.Name)
	}
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			a, b := newNamespace(name), newNamespace(name)
			if !valid.MatchString(a) {
				t.Errorf("newNamespace(%q) = %q, want it to match %s", name, a, valid)
			}
			if len(a) > 40 {
				t.Errorf("newNamespace(%q) = %q is %d chars, want at most 40", name, a, len(a))
			}
			if a == b {
				t.Errorf("newNamespace(%q) gave %q twice, want unique namespaces", name, a)
			}
		})
	}
}

func TestCaseNamesUnique(t *testing.T) {
	seen := map[string]bool{}
	for _, c := range Cases() {
		if seen[c.Name] {
			t.Errorf("case %q appears twice", c.Name)
		}
		seen[c.Name] = true
		if c.Fn == nil {
			t.Errorf("case %q has no Fn", c.Name)
		}
	}
	for _, want := range []string{"happy path", "exit code failed", "volume", "environment variables", "with stdin"} {
		if !seen[want] {
			t.Errorf("the guide's case %q is missing", want)
		}
	}
}

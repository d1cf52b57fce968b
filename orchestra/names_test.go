package orchestra

import (
	"strings"
	"testing"
)

func TestSafeName(t *testing.T) {
	tests := []struct {
		rule  NameRule
		parts []string
		want  string // exact, or a prefix ending in '*' when a hash follows
	}{
		{PathNameRule, []string{"ns", "build-1"}, "ns-build-1"},
		{PathNameRule, []string{"ns", "_nano"}, "ns-_nano"},
		{PathNameRule, []string{"ns", "a b"}, "ns-a_b-*"},
		{PathNameRule, []string{".hidden"}, "x.hidden-*"},
		{DockerNameRule, []string{"-ns", "x"}, "x-ns-x-*"},
		{DNSLabelRule, []string{"ns", "Build_1"}, "ns-build-1-*"},
		{DNSLabelRule, []string{"ns", "ok-1"}, "ns-ok-1"},
		{DNSLabelRule, []string{"ns", "end-"}, "ns-end-*"},
		{DNSLabelRule, []string{"ns", strings.Repeat("a", 100)}, "ns-aaaa*"},
	}
	for _, tt := range tests {
		got := SafeName(tt.rule, tt.parts...)
		if p, ok := strings.CutSuffix(tt.want, "*"); ok {
			if !strings.HasPrefix(got, p) || got == strings.Join(tt.parts, "-") {
				t.Errorf("SafeName(%q) = %q, want %s<hash>", tt.parts, got, p)
			}
		} else if got != tt.want {
			t.Errorf("SafeName(%q) = %q, want %q", tt.parts, got, tt.want)
		}
		checkRule(t, tt.rule, got)
	}
}

func checkRule(t *testing.T, rule NameRule, name string) {
	t.Helper()
	if name == "" || len(name) > rule.MaxLen || !isAlnum(name[0]) {
		t.Fatalf("name %q breaks the rule (length or first byte)", name)
	}
	if rule.AlnumEnd && !isAlnum(name[len(name)-1]) {
		t.Fatalf("name %q does not end alphanumeric", name)
	}
	for i := 0; i < len(name); i++ {
		if !rule.Allowed(name[i]) {
			t.Fatalf("name %q has byte %q", name, name[i])
		}
	}
}

// FuzzSafeName checks that every rule's names are valid and that two
// different inputs never share a name.
func FuzzSafeName(f *testing.F) {
	for _, s := range [][2]string{{"ns", "id"}, {"ns", "a b"}, {"ns-a", "b"}, {"", ""}, {"Ü", "--"}} {
		f.Add(s[0], s[1], "ns", "a_b")
	}
	f.Fuzz(func(t *testing.T, ns1, id1, ns2, id2 string) {
		for _, rule := range []NameRule{PathNameRule, DockerNameRule, DNSLabelRule} {
			a, b := SafeName(rule, ns1, id1), SafeName(rule, ns2, id2)
			checkRule(t, rule, a)
			checkRule(t, rule, b)
			if a == b && ns1+"-"+id1 != ns2+"-"+id2 {
				t.Fatalf("%q and %q share the name %q", ns1+"-"+id1, ns2+"-"+id2, a)
			}
		}
	})
}

//go:build linux

package shim

import (
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestImportsStayEarly guards the start-up cost: the shim takes over in its
// package init, which runs early only while it imports nothing that os
// does not already need.
func TestImportsStayEarly(t *testing.T) {
	allowed := map[string]bool{"os": true, "sync": true, "syscall": true}
	files, _ := filepath.Glob("*.go")
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		parsed, err := parser.ParseFile(token.NewFileSet(), f, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range parsed.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			if !allowed[path] {
				t.Errorf("%s imports %q: the shim's init would run after it, later in a large binary", f, path)
			}
		}
	}
}

func TestItoaAndOneLine(t *testing.T) {
	for _, n := range []int{0, 7, 42, 137, -1, 1 << 40} {
		if got := itoa(n); got != strconv.Itoa(n) {
			t.Errorf("itoa(%d) = %q", n, got)
		}
	}
	if got := oneLine("a\nb\r\nc"); got != "a b  c" {
		t.Errorf("oneLine = %q", got)
	}
}

func TestArgs(t *testing.T) {
	argv, env := Args("/bin/echo", []string{"echo", "hi"}, []string{"A=1"})
	if argv[0] != Arg0 || argv[2] != "/bin/echo" || strings.Join(argv[3:], " ") != "echo hi" {
		t.Fatalf("argv = %q", argv)
	}
	want := []string{"A=1"}
	if raceEnabled {
		if argv[1] != raceEnv {
			t.Fatalf("a race build must drop %q again, argv[1] = %q", raceEnv, argv[1])
		}
		want = append(want, raceEnv)
	} else if argv[1] != "-" {
		t.Fatalf("argv[1] = %q, want -", argv[1])
	}
	if strings.Join(env, " ") != strings.Join(want, " ") {
		t.Fatalf("env = %q, want %q", env, want)
	}
	// A task's own GORACE is kept and not dropped.
	argv, env = Args("/bin/true", []string{"true"}, []string{"GORACE=halt_on_error=1"})
	if argv[1] != "-" || len(env) != 1 {
		t.Fatalf("with the task's own GORACE: argv[1] %q env %q", argv[1], env)
	}
}

func TestChildrenOfThisProcess(t *testing.T) {
	p, err := os.StartProcess("/bin/sleep", []string{"sleep", "10"}, &os.ProcAttr{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = p.Kill(); _, _ = p.Wait() }()
	found := false
	for _, pid := range children() {
		found = found || pid == p.Pid
	}
	if !found {
		t.Fatalf("children() = %v, missing %d", children(), p.Pid)
	}
}

//go:build linux

package shim

import (
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"syscall"
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
	tests := []struct {
		name string
		spec Spec
	}{
		{"plain", Spec{Path: "/bin/echo", Args: []string{"echo", "hi"}, Env: []string{"A=1"}, Dir: "/w", UID: -1, GID: -1}},
		{"not found", Spec{Path: "", Args: []string{"nope", ""}, Dir: "/w", UID: -1, GID: -1}},
		{"user and binds", Spec{Path: "/bin/true", Args: []string{"true"}, Dir: "/w/a", UID: 65534, GID: 4294967294,
			Binds: []Bind{{"/v/b", "/w/a/b"}, {"/v/c", "/w/a/b/c"}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			argv, env := Args(tt.spec)
			if argv[0] != Arg0 {
				t.Fatalf("argv[0] = %q", argv[0])
			}
			drop, got, ok := parseArgs(argv[1:])
			if !ok {
				t.Fatalf("parseArgs(%q) failed", argv)
			}
			want := tt.spec
			want.Env = nil
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("round trip: got %+v, want %+v", got, want)
			}
			wantEnv := tt.spec.Env
			if raceEnabled {
				if drop != raceEnv {
					t.Fatalf("a race build must drop %q again, drop = %q", raceEnv, drop)
				}
				wantEnv = append(wantEnv[:len(wantEnv):len(wantEnv)], raceEnv)
			} else if drop != "-" {
				t.Fatalf("drop = %q, want -", drop)
			}
			if strings.Join(env, " ") != strings.Join(wantEnv, " ") {
				t.Fatalf("env = %q, want %q", env, wantEnv)
			}
		})
	}
	// A task's own GORACE is kept and not dropped.
	argv, env := Args(Spec{Path: "/bin/true", Args: []string{"true"}, Env: []string{"GORACE=halt_on_error=1"}, UID: -1})
	if argv[1] != "-" || len(env) != 1 {
		t.Fatalf("with the task's own GORACE: argv[1] %q env %q", argv[1], env)
	}
	for _, bad := range [][]string{nil, {"-", "/w", "x:1", "0", "/p", "p"}, {"-", "/w", "-", "2", "/a", "/b", "/p", "p"}} {
		if _, _, ok := parseArgs(bad); ok {
			t.Errorf("parseArgs(%q) accepted a malformed argv", bad)
		}
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

// TestCloseOnExecAbove2 opens descriptors without close-on-exec, as a
// process inherits them, and checks both ways of marking them.
func TestCloseOnExecAbove2(t *testing.T) {
	for name, mark := range map[string]func() error{
		"close_range": closeOnExecAbove2,
		"proc":        closeOnExecFromProc,
	} {
		t.Run(name, func(t *testing.T) {
			fd, err := syscall.Open("/dev/null", syscall.O_RDONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer syscall.Close(fd)
			if flags := fdFlags(t, fd); flags&syscall.FD_CLOEXEC != 0 {
				t.Fatalf("fd %d starts close-on-exec", fd)
			}
			if err := mark(); err != nil {
				t.Fatal(err)
			}
			if flags := fdFlags(t, fd); flags&syscall.FD_CLOEXEC == 0 {
				t.Fatalf("fd %d is not close-on-exec after marking", fd)
			}
			for std := 0; std <= 2; std++ {
				if flags := fdFlags(t, std); flags&syscall.FD_CLOEXEC != 0 {
					t.Fatalf("fd %d became close-on-exec", std)
				}
			}
		})
	}
}

func fdFlags(t *testing.T, fd int) uintptr {
	t.Helper()
	flags, _, errno := syscall.Syscall(syscall.SYS_FCNTL, uintptr(fd), syscall.F_GETFD, 0)
	if errno != 0 {
		t.Fatalf("fcntl(%d, F_GETFD): %v", fd, errno)
	}
	return flags
}

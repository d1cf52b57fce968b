package mydriver

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/jtarchie/pocketci/orchestra"
	"github.com/jtarchie/pocketci/orchestra/conformance"
	"github.com/jtarchie/pocketci/orchestra/conformance/testkit"
	"github.com/jtarchie/pocketci/pluginsdk/sdktest"
)

// setup skips without root (namespaces need it) and points the driver at a
// private root directory.
func setup(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("creating namespaces needs root")
	}
	t.Setenv(RootEnv, t.TempDir())
}

func newDriver(t *testing.T, namespace string) *Driver {
	t.Helper()
	return newDriverWith(t, namespace, Config{})
}

func newDriverWith(t *testing.T, namespace string, cfg Config) *Driver {
	t.Helper()
	d, err := New(t.Context(), namespace, cfg, testkit.Logger(t, slog.LevelWarn))
	if err != nil {
		t.Fatalf("New(%q): %v", namespace, err)
	}
	t.Cleanup(func() {
		if err := d.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return d.(*Driver)
}

// run starts task and waits until it is done.
func run(t *testing.T, d orchestra.Driver, task orchestra.Task) (c orchestra.Container, code int, stdout, stderr string) {
	t.Helper()
	c, err := d.RunContainer(t.Context(), task)
	if err != nil {
		t.Fatalf("RunContainer(%q): %v", task.ID, err)
	}
	return c, testkit.MustWaitDone(t, c, 30*time.Second).ExitCode(), logs(t, c, "stdout"), logs(t, c, "stderr")
}

func logs(t *testing.T, c orchestra.Container, which string) string {
	t.Helper()
	var out, errb bytes.Buffer
	if err := c.Logs(t.Context(), &out, &errb, false); err != nil {
		t.Fatalf("Logs: %v", err)
	}
	if which == "stderr" {
		return errb.String()
	}
	return out.String()
}

// processesLeft is what Leaks says about live processes of namespace.
func processesLeft(t *testing.T, namespace string) []string {
	t.Helper()
	left, err := Leaks(namespace)
	if err != nil {
		t.Fatal(err)
	}
	var procs []string
	for _, l := range left {
		if strings.HasPrefix(l, "process ") {
			procs = append(procs, l)
		}
	}
	return procs
}

// TestConformance runs the whole suite twice: against the driver compiled
// in, and through the plugin protocol (sdktest: the SDK's real gRPC server
// and the host's client, bulk socket included, inside this test process,
// with no binary to build). A plugin must be indistinguishable from the
// driver compiled in, so both must pass.
func TestConformance(t *testing.T) {
	setup(t)
	t.Run("in process", func(t *testing.T) {
		p := Provider()
		conformance.Run(t, conformance.Options{
			New: func(ns string) (orchestra.Driver, error) {
				return p.NewDriver(t.Context(), ns, nil, testkit.Logger(t, slog.LevelWarn))
			},
			Leaks: Leaks,
		})
	})
	t.Run("through the plugin protocol", func(t *testing.T) {
		p := sdktest.Provider(t, Provider())
		conformance.Run(t, conformance.Options{
			New:   func(ns string) (orchestra.Driver, error) { return p.NewDriver(t.Context(), ns, nil, nil) },
			Leaks: Leaks,
		})
	})
}

func TestIsolation(t *testing.T) {
	setup(t)
	d := newDriver(t, "isolation")
	host, _ := os.Hostname()
	tests := []struct {
		name    string
		command string
		want    string
	}{
		{"task runs below an init", `test $$ != 1 && echo $PPID`, "1\n"},
		{"host processes are invisible", fmt.Sprintf("test -e /proc/%d || echo hidden", os.Getpid()), "hidden\n"},
		{"hostname is private", "hostname ct-private && hostname", "ct-private\n"},
		{"working directory is the task's", "pwd", d.dir + "/tasks/pwd/work\n"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := []string{"pid", "proc", "hostname", "pwd"}[i]
			_, code, out, errOut := run(t, d, orchestra.Task{ID: id, Command: []string{"sh", "-c", tt.command}})
			if code != 0 || out != tt.want {
				t.Fatalf("expected exit 0 and %q, got %d %q (stderr %q)", tt.want, code, out, errOut)
			}
		})
	}
	if now, _ := os.Hostname(); now != host {
		t.Fatalf("the host's hostname changed from %q to %q", host, now)
	}
}

func TestBackgroundChildDiesWithTask(t *testing.T) {
	setup(t)
	d := newDriver(t, "background")
	_, code, out, _ := run(t, d, orchestra.Task{ID: "bg", Command: []string{"sh", "-c", "sleep 1000 & echo started"}})
	if code != 0 || out != "started\n" {
		t.Fatalf("expected exit 0 and %q, got %d %q", "started\n", code, out)
	}
	if left := processesLeft(t, "background"); len(left) > 0 {
		t.Fatalf("processes outlived their task: %v", left)
	}
}

func TestCleanupKillsRunningTask(t *testing.T) {
	setup(t)
	d := newDriver(t, "kill")
	c, err := d.RunContainer(t.Context(), orchestra.Task{ID: "sleeper", Command: []string{"sleep", "1000"}})
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := c.Status(t.Context()); st.IsDone() {
		t.Fatal("sleep 1000 is done at once; the test proves nothing")
	}
	if err := c.Cleanup(t.Context()); err != nil {
		t.Fatal(err)
	}
	if code := testkit.MustWaitDone(t, c, 30*time.Second).ExitCode(); code != 128+9 {
		t.Fatalf("exit code of a task killed by SIGKILL: expected 137, got %d", code)
	}
	if left := processesLeft(t, "kill"); len(left) > 0 {
		t.Fatalf("processes outlived Cleanup: %v", left)
	}
}

func TestCloseKillsRunningTasks(t *testing.T) {
	setup(t)
	d, err := New(t.Context(), "close-running", Config{}, testkit.Logger(t, slog.LevelWarn))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := d.RunContainer(t.Context(), orchestra.Task{ID: fmt.Sprint(i), Command: []string{"sh", "-c", "sleep 1000 & sleep 1000"}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if left, err := Leaks("close-running"); err != nil || len(left) > 0 {
		t.Fatalf("after Close: left %v, err %v", left, err)
	}
	if _, err := d.RunContainer(t.Context(), orchestra.Task{ID: "late", Command: []string{"true"}}); !errors.Is(err, orchestra.ErrClosed) {
		t.Fatalf("RunContainer after Close: expected ErrClosed, got %v", err)
	}
}

// helperEnv makes the test binary act as a driver process that is killed
// without Close (see TestDriverProcessDies).
const helperEnv = "MYDRIVER_TEST_HELPER"

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == "1" {
		d, err := New(context.Background(), "orphans", Config{}, nil)
		if err == nil {
			_, err = d.RunContainer(context.Background(), orchestra.Task{ID: "orphan", Command: []string{"sh", "-c", "sleep 1000 & sleep 1000"}})
		}
		if err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		fmt.Println("ready")
		select {}
	}
	os.Exit(m.Run())
}

func TestDriverProcessDies(t *testing.T) {
	setup(t)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	t.Cleanup(func() {
		if !killed {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	line, _ := bufio.NewReader(out).ReadString('\n')
	if line != "ready\n" {
		t.Fatalf("helper: expected %q, got %q", "ready\n", line)
	}
	// The task and its background child must run before the kill, or the
	// test proves nothing.
	for deadline := time.Now().Add(5 * time.Second); len(processesLeft(t, "orphans")) < 2; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("expected two processes of the task before the kill, got %v", processesLeft(t, "orphans"))
		}
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	killed = true
	deadline := time.Now().Add(5 * time.Second)
	for len(processesLeft(t, "orphans")) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("processes outlived the killed driver process: %v", processesLeft(t, "orphans"))
		}
		time.Sleep(20 * time.Millisecond)
	}
	// A new instance finds the task, which died with the driver's process.
	d := newDriver(t, "orphans") // its Close removes what the dead one left on disk
	c, err := d.GetContainer(t.Context(), "orphan")
	if err != nil {
		t.Fatal(err)
	}
	if code := testkit.MustWaitDone(t, c, 30*time.Second).ExitCode(); code != 137 {
		t.Fatalf("a task whose driver process died: expected exit 137, got %d", code)
	}
}

func TestGetContainerFinished(t *testing.T) {
	setup(t)
	first := newDriver(t, "finder")
	task := orchestra.Task{ID: "done", Command: []string{"sh", "-c", "echo x >> ./data/count; echo out; exit 7"},
		Mounts: orchestra.Mounts{{Name: "data", Path: "/data"}}}
	c, code, _, _ := run(t, first, task)
	if got, err := first.GetContainer(t.Context(), c.ID()); err != nil || got != c || code != 7 {
		t.Fatalf("GetContainer on the same instance: expected the container (exit 7), got %v %v (exit %d)", got, err, code)
	}
	// A second instance, as after a plugin restart, finds the finished task.
	second := newDriver(t, "finder")
	found, err := second.GetContainer(t.Context(), c.ID())
	if err != nil {
		t.Fatal(err)
	}
	if code := testkit.MustWaitDone(t, found, 30*time.Second).ExitCode(); code != 7 || logs(t, found, "stdout") != "out\n" {
		t.Fatalf("found container: expected exit 7 and %q, got %d %q", "out\n", code, logs(t, found, "stdout"))
	}
	if again, err := second.RunContainer(t.Context(), task); err != nil || again != found {
		t.Fatalf("RunContainer of a found ID: expected the found container, got %v %v", again, err)
	}
	for _, id := range []string{"never", ""} {
		if _, err := second.GetContainer(t.Context(), id); !errors.Is(err, orchestra.ErrContainerNotFound) {
			t.Fatalf("GetContainer(%q): expected ErrContainerNotFound, got %v", id, err)
		}
	}
	other := newDriver(t, "another-namespace")
	if _, err := other.GetContainer(t.Context(), c.ID()); !errors.Is(err, orchestra.ErrContainerNotFound) {
		t.Fatalf("GetContainer from another namespace: expected ErrContainerNotFound, got %v", err)
	}
	if err := found.Cleanup(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := second.GetContainer(t.Context(), c.ID()); !errors.Is(err, orchestra.ErrContainerNotFound) {
		t.Fatalf("GetContainer after Cleanup: expected ErrContainerNotFound, got %v", err)
	}
	if _, err := c.Status(t.Context()); err != nil {
		t.Fatalf("Status of the first handle after another removed it: %v", err)
	}
}

// TestGetContainerRunning: a second instance finds a task the first one
// runs, follows its output, and its Cleanup kills it.
func TestGetContainerRunning(t *testing.T) {
	setup(t)
	first := newDriver(t, "running")
	c, err := first.RunContainer(t.Context(), orchestra.Task{ID: "long", Command: []string{"sh", "-c", "echo started; sleep 1000"}})
	if err != nil {
		t.Fatal(err)
	}
	second := newDriver(t, "running")
	found, err := second.GetContainer(t.Context(), c.ID())
	if err != nil {
		t.Fatal(err)
	}
	if again, err := second.RunContainer(t.Context(), orchestra.Task{ID: "long", Command: []string{"false"}}); err != nil || again != found {
		t.Fatalf("RunContainer of a running ID in a second instance: expected the found container, got %v %v", again, err)
	}
	var out testkit.SafeBuffer
	followed := make(chan error, 1)
	go func() { followed <- found.Logs(t.Context(), &out, io.Discard, true) }()
	for deadline := time.Now().Add(10 * time.Second); out.String() != "started\n"; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("following through the second instance: expected %q, got %q", "started\n", out.String())
		}
	}
	if st, err := found.Status(t.Context()); err != nil || st.IsDone() {
		t.Fatalf("Status through the second instance: expected running, got %v %v", st, err)
	}
	if err := found.Cleanup(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := <-followed; err != nil && !errors.Is(err, orchestra.ErrContainerNotFound) {
		t.Fatalf("follow of a task cleaned up: %v", err)
	}
	if code := testkit.MustWaitDone(t, c, 30*time.Second).ExitCode(); code != 137 {
		t.Fatalf("the first instance's handle after the second's Cleanup: expected exit 137, got %d", code)
	}
	if left := processesLeft(t, "running"); len(left) > 0 {
		t.Fatalf("processes outlived Cleanup through the second instance: %v", left)
	}
}

func TestFollowLogs(t *testing.T) {
	setup(t)
	d := newDriver(t, "follow")
	pr, pw := io.Pipe()
	c, err := d.RunContainer(t.Context(), orchestra.Task{ID: "f", Stdin: pr,
		Command: []string{"sh", "-c", `echo first; echo oops >&2; read line; echo "got $line"`}})
	if err != nil {
		t.Fatal(err)
	}
	var out, errb testkit.SafeBuffer
	followed := make(chan error, 1)
	go func() { followed <- c.Logs(t.Context(), &out, &errb, true) }()
	for deadline := time.Now().Add(10 * time.Second); out.String() != "first\n"; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("Logs with follow did not stream %q while the task ran, got %q", "first\n", out.String())
		}
	}
	_, _ = io.WriteString(pw, "more\n")
	_ = pw.Close()
	if err := <-followed; err != nil {
		t.Fatal(err)
	}
	if out.String() != "first\ngot more\n" || errb.String() != "oops\n" {
		t.Fatalf("followed: got stdout %q stderr %q", out.String(), errb.String())
	}
}

// TestMountsAndWorkDir: where mounts and WorkDir put the command.
func TestMountsAndWorkDir(t *testing.T) {
	setup(t)
	d := newDriver(t, "mounts")
	work := func(id string) string { return d.taskDir(id) + "/work" }
	tests := []struct {
		name    string
		task    orchestra.Task
		want    string
		wantDir string
	}{
		{"default working directory", orchestra.Task{ID: "wd-default", Command: []string{"pwd"}}, "", "wd-default"},
		{"relative WorkDir is created", orchestra.Task{ID: "wd-rel", WorkDir: "a/b", Command: []string{"pwd"}}, "", "wd-rel/a/b"},
		{"absolute WorkDir is under the working directory", orchestra.Task{ID: "wd-abs", WorkDir: "/tmp", Command: []string{"pwd"}}, "", "wd-abs/tmp"},
		{"nested absolute mounts", orchestra.Task{ID: "nested", Command: []string{"sh", "-c", "echo b > a/b/f; echo a > a/f; ls a"},
			Mounts: orchestra.Mounts{{Name: "inner", Path: "/a/b"}, {Name: "outer", Path: "/a"}}}, "b\nf\n", ""},
		{"inner volume got the inner file", orchestra.Task{ID: "inner", Command: []string{"sh", "-c", "cat i/f; ls o/b; cat o/f"},
			Mounts: orchestra.Mounts{{Name: "inner", Path: "i"}, {Name: "outer", Path: "o"}}}, "b\na\n", ""},
		{"OLDPWD is not the driver's", orchestra.Task{ID: "no-oldpwd", WorkDir: "x", Command: []string{"sh", "-c", "echo ${OLDPWD-unset}"}}, "unset\n", ""},
		{"OLDPWD is the task's", orchestra.Task{ID: "oldpwd", WorkDir: "x", Env: map[string]string{"OLDPWD": "/was here"},
			Command: []string{"sh", "-c", "echo $OLDPWD"}}, "/was here\n", ""},
		{"WorkDir inside a mount", orchestra.Task{ID: "in-mount", WorkDir: "/a/b", Command: []string{"cat", "f"},
			Mounts: orchestra.Mounts{{Name: "outer", Path: "a"}, {Name: "inner", Path: "a/b"}}}, "b\n", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := tt.want
			if tt.wantDir != "" {
				id, sub, _ := strings.Cut(tt.wantDir, "/")
				want = strings.TrimSuffix(work(id)+"/"+sub, "/") + "\n"
			}
			_, code, out, errOut := run(t, d, tt.task)
			if code != 0 || out != want {
				t.Fatalf("expected exit 0 and %q, got %d %q (stderr %q)", want, code, out, errOut)
			}
		})
	}
}

// TestCommandNotFound: the task's failure, with or without a User.
func TestCommandNotFound(t *testing.T) {
	setup(t)
	d := newDriver(t, "not-found")
	for _, u := range []string{"", "nobody"} {
		t.Run("user "+u, func(t *testing.T) {
			_, code, _, errOut := run(t, d, orchestra.Task{ID: "nf-" + u, User: u, Command: []string{"no-such-command-here"}})
			if code != 127 || !strings.Contains(errOut, "no-such-command-here") {
				t.Fatalf("expected exit 127 and a message naming the command, got %d %q", code, errOut)
			}
		})
	}
}

// TestConfig: the config is decoded strictly, its errors name the field and
// never the value, and two instances with different roots work side by side.
func TestConfig(t *testing.T) {
	setup(t)
	p := Provider()
	tests := []struct {
		name    string
		raw     string
		wantErr string // empty: valid
	}{
		{"empty", ``, ""},
		{"null", `null`, ""},
		{"root", `{"root": "/srv/tasks"}`, ""},
		{"relative root", `{"root": "secret-relative"}`, `"root" must be an absolute path`},
		{"unknown field", `{"rooot": "/x"}`, `rooot`},
		{"wrong type", `{"root": 7}`, `root`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := p.UnmarshalConfig([]byte(tt.raw))
			if tt.wantErr == "" {
				if err != nil || cfg.DriverName() != Name {
					t.Fatalf("expected a %s config, got %v %v", Name, cfg, err)
				}
				return
			}
			if !errors.Is(err, orchestra.ErrInvalidConfig) || !strings.Contains(err.Error(), tt.wantErr) || strings.Contains(err.Error(), "secret") {
				t.Fatalf("expected ErrInvalidConfig naming %q without the value, got %v", tt.wantErr, err)
			}
		})
	}
	if _, err := New(t.Context(), "x", Config{Root: "relative"}, nil); !errors.Is(err, orchestra.ErrInvalidConfig) {
		t.Fatalf("New with a relative root: expected ErrInvalidConfig, got %v", err)
	}

	rootA, rootB := t.TempDir(), t.TempDir()
	a := newDriverWith(t, "side", Config{Root: rootA})
	b := newDriverWith(t, "side", Config{Root: rootB})
	va, _ := a.CreateVolume(t.Context(), "v", 0)
	vb, _ := b.CreateVolume(t.Context(), "v", 0)
	if !strings.HasPrefix(va.Path(), rootA+"/") || !strings.HasPrefix(vb.Path(), rootB+"/") {
		t.Fatalf("volumes of two roots: got %q and %q, want under %q and %q", va.Path(), vb.Path(), rootA, rootB)
	}
	c, code, _, _ := run(t, a, orchestra.Task{ID: "t", Command: []string{"true"}})
	if _, err := b.GetContainer(t.Context(), c.ID()); code != 0 || !errors.Is(err, orchestra.ErrContainerNotFound) {
		t.Fatalf("a task of root A seen from root B: exit %d, GetContainer %v; want 0 and ErrContainerNotFound", code, err)
	}
}

func TestInvalidTask(t *testing.T) {
	setup(t)
	d := newDriver(t, "invalid")
	tests := []struct {
		name string
		task orchestra.Task
	}{
		{"no id", orchestra.Task{Command: []string{"true"}}},
		{"no command", orchestra.Task{ID: "x"}},
		{"bad env", orchestra.Task{ID: "x", Command: []string{"true"}, Env: map[string]string{"A=B": "c"}}},
		{"root mount", orchestra.Task{ID: "x", Command: []string{"true"}, Mounts: orchestra.Mounts{{Name: "v", Path: "/"}}}},
		{"unknown user", orchestra.Task{ID: "x", Command: []string{"true"}, User: "no-such-user-here"}},
		{"one place twice", orchestra.Task{ID: "x", Command: []string{"true"}, Mounts: orchestra.Mounts{{Name: "a", Path: "/a"}, {Name: "b", Path: "a"}}}},
		{"dot-dot mount", orchestra.Task{ID: "x", Command: []string{"true"}, Mounts: orchestra.Mounts{{Name: "a", Path: "x/../.."}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := d.RunContainer(t.Context(), tt.task); !errors.Is(err, orchestra.ErrInvalidTask) {
				t.Fatalf("expected ErrInvalidTask, got %v", err)
			}
		})
	}
}

func TestUser(t *testing.T) {
	setup(t)
	// t.TempDir is private to root; the task's user must reach its directory.
	root, err := os.MkdirTemp("", "mydriver-user-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(root) })
	if err := os.Chmod(root, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv(RootEnv, root)
	d := newDriver(t, "user")
	_, code, out, errOut := run(t, d, orchestra.Task{ID: "nobody", User: "nobody", Command: []string{"sh", "-c", "id -u; touch ./mine"}})
	if code != 0 || out != "65534\n" {
		t.Fatalf("expected exit 0 and uid 65534, got %d %q (stderr %q)", code, out, errOut)
	}
}

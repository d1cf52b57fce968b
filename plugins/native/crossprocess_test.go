//go:build linux

package native

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"github.com/jtarchie/pocketci/orchestra/conformance/testkit"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jtarchie/pocketci/orchestra"
)

// helperEnv makes the test binary a second host: it opens the namespace,
// starts a task whose descendant escapes with setsid, prints "ready" and
// waits to be killed.
const helperEnv = "NATIVE_TEST_HOST"

func TestMain(m *testing.M) {
	if spec := os.Getenv(helperEnv); spec != "" {
		helperHost(spec)
		return
	}
	os.Exit(m.Run())
}

func helperHost(spec string) {
	ns, rest, _ := strings.Cut(spec, "|")
	id, pidFile, _ := strings.Cut(rest, "|")
	d, err := open(ns, nil)
	if err != nil {
		panic(err)
	}
	c, err := d.RunContainer(t0(), orchestra.Task{ID: id, Command: []string{"sh", "-c",
		"setsid sleep 1000 & echo $! $! > " + pidFile + "; echo started; sleep 1000"}})
	if err != nil {
		panic(err)
	}
	for {
		var out strings.Builder
		_ = c.Logs(t0(), &out, &out, false)
		if out.String() == "started\n" {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	fmt.Println("ready")
	select {}
}

// TestSecondHostAndDriverDeath: another process (a second host) runs a
// task; this process opens the same namespace and ID and attaches to it
// without running it again. When the other host is killed with SIGKILL,
// the task's whole tree dies (also a descendant that called setsid), and
// the attached handle reports the task done, failed.
func TestSecondHostAndDriverDeath(t *testing.T) {
	useRoot(t)
	const ns, id = "second-host", "the task"
	pidFile := filepath.Join(t.TempDir(), "escapee")
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	other := exec.Command(exe)
	other.Env = append(os.Environ(), helperEnv+"="+ns+"|"+id+"|"+pidFile)
	stdout, err := other.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	other.Stderr = os.Stderr
	if err := other.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = other.Process.Kill(); _ = other.Wait() }()
	if line, err := bufio.NewReader(stdout).ReadString('\n'); err != nil || line != "ready\n" {
		t.Fatalf("the other host did not get ready: %q %v", line, err)
	}
	escapee := pidsOf(t, pidFile)[0]
	if !alive(escapee) {
		t.Fatalf("the setsid descendant %d is not running; the test proves nothing", escapee)
	}

	d := newDriver(t, ns)
	c, err := d.RunContainer(t.Context(), orchestra.Task{ID: id, Command: []string{"sh", "-c", "echo ran-again"}})
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := c.Status(t.Context()); st.IsDone() {
		t.Fatal("the task the other host runs is seen as done")
	}
	if out, _ := logsOf(t, c); out != "started\n" {
		t.Fatalf("attached logs: expected the other host's task (%q), got %q", "started\n", out)
	}

	if err := other.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = other.Wait()
	if st := testkit.MustWaitDone(t, c, 30*time.Second); st.ExitCode() == 0 {
		t.Fatal("a task whose host died reports exit 0")
	}
	deadline := time.Now().Add(5 * time.Second)
	for alive(escapee) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if alive(escapee) {
		_ = syscall.Kill(escapee, syscall.SIGKILL)
		t.Fatalf("the setsid descendant %d outlived its host's death", escapee)
	}
	// A new instance looking the task up finds it gone, and that look
	// removes what the dead host left.
	fresh := newDriver(t, ns)
	if _, err := fresh.GetContainer(t.Context(), id); !errors.Is(err, orchestra.ErrContainerNotFound) {
		t.Fatalf("GetContainer of a task whose host died: expected ErrContainerNotFound, got %v", err)
	}
	if entries, _ := os.ReadDir(filepath.Join(Root(), ns, "tasks")); len(entries) != 0 {
		t.Fatalf("the dead host's task directory is still there: %v", entries)
	}
}

// t0 is the helper host's context: it never ends.
func t0() context.Context { return context.Background() }

package pocketci_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jtarchie/pocketci/host"
	"github.com/jtarchie/pocketci/orchestra"
)

func TestMain(m *testing.M) {
	if ns := os.Getenv("DRIVERS_TEST_DOCKER_HOST_NS"); ns != "" {
		dockerHelperHost(ns)
		return
	}
	os.Exit(m.Run())
}

// dockerHelperHost is a host process for TestDockerContainersOutliveTheirHost:
// it starts a long task through the docker plugin, prints the plugin's PID
// and the container's ID once the task runs, and waits to be killed.
func dockerHelperHost(namespace string) {
	bin, _ := filepath.Abs("bin")
	h, err := host.New(host.Config{Dirs: []string{bin}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		panic(err)
	}
	p, err := h.Plugin("docker")
	if err != nil {
		panic(err)
	}
	// DRIVERS_TEST_DOCKER_EPHEMERAL=1 opens the namespace as ephemeral.
	d, err := p.Open(context.Background(), namespace, host.OpenOptions{Ephemeral: os.Getenv("DRIVERS_TEST_DOCKER_EPHEMERAL") == "1"})
	if err != nil {
		panic(err)
	}
	c, err := d.RunContainer(context.Background(), orchestra.Task{ID: "survivor", Image: "busybox",
		Command: []string{"sh", "-c", "echo started; sleep 600"}})
	if err != nil {
		panic(err)
	}
	for {
		var out bytes.Buffer
		if err := c.Logs(context.Background(), &out, io.Discard, false); err != nil {
			panic(err)
		}
		if out.String() == "started\n" {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	fmt.Println(p.PID(), c.ID())
	select {}
}

// TestDockerContainersOutliveTheirHost kills the host with SIGKILL: the docker
// plugin exits within 5 s and leaves the container to the engine, and a new
// host finds it again in the same namespace by the ID the first host had.
func TestDockerContainersOutliveTheirHost(t *testing.T) {
	namespace := fmt.Sprintf("hostdeath-%d", time.Now().UnixNano())
	cmd, pluginPID, containerID := startDockerHelperHost(t, namespace)
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	waitPluginExit(t, pluginPID, 5*time.Second)
	out, err := exec.Command("docker", "ps", "-q", "--filter", "label=pocketci.namespace="+namespace).Output()
	if err != nil || len(strings.Fields(string(out))) != 1 {
		t.Fatalf("want the task's container still running in the engine, docker ps says %q (%v)", out, err)
	}

	// A new host finds the container again by its ID.
	bin, _ := filepath.Abs("bin")
	h, err := host.New(host.Config{Dirs: []string{bin}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	p, err := h.Plugin("docker")
	if err != nil {
		t.Fatal(err)
	}
	d, err := p.Open(context.Background(), namespace, host.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c, err := d.GetContainer(context.Background(), containerID)
	if err != nil {
		t.Fatalf("a new host cannot find the container %q: %v", containerID, err)
	}
	if c.ID() != containerID {
		t.Fatalf("found container's ID = %q, want %q", c.ID(), containerID)
	}
	st, err := c.Status(context.Background())
	if err != nil || st.IsDone() {
		t.Fatalf("found container: done=%v, %v; want it still running", st != nil && st.IsDone(), err)
	}
	var logs bytes.Buffer
	if err := c.Logs(context.Background(), &logs, io.Discard, false); err != nil || logs.String() != "started\n" {
		t.Fatalf("found container's logs = %q, %v", logs.String(), err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	left, err := platforms["docker"].leaks(namespace)
	if err != nil || len(left) > 0 {
		t.Fatalf("after Close: %v (%v)", left, err)
	}
}

func zombie(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	return err != nil || strings.Contains(string(stat), ") Z ")
}

// startDockerHelperHost starts this test binary as a helper host that runs
// a task through the docker plugin in namespace (env adds to its
// environment), and returns it with its plugin's PID and the task's
// container ID. The namespace's containers and volumes are removed when the
// test ends.
func startDockerHelperHost(t *testing.T, namespace string, env ...string) (*exec.Cmd, int, string) {
	t.Helper()
	if err := platforms["docker"].available(); err != nil {
		if os.Getenv("ORCHESTRA_REQUIRE_DOCKER") == "1" {
			t.Fatalf("ORCHESTRA_REQUIRE_DOCKER=1 but %v", err)
		}
		t.Skipf("%v (set ORCHESTRA_REQUIRE_DOCKER=1 to fail instead)", err)
	}
	if _, err := os.Stat(filepath.Join("bin", host.Prefix+"docker")); err != nil {
		t.Fatalf("bin/%sdocker missing: run make build first", host.Prefix)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(append(os.Environ(), "DRIVERS_TEST_DOCKER_HOST_NS="+namespace), env...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var pluginPID int
	var containerID string
	if _, err := fmt.Fscan(stdout, &pluginPID, &containerID); err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("read the plugin PID and container ID from the helper host: %v", err)
	}
	t.Cleanup(func() {
		exec.Command("sh", "-c", "docker rm -f $(docker ps -aq --filter label=pocketci.namespace="+namespace+") 2>/dev/null; "+
			"docker volume rm $(docker volume ls -q --filter label=pocketci.namespace="+namespace+") 2>/dev/null").Run()
	})
	return cmd, pluginPID, containerID
}

// waitPluginExit waits up to limit for the plugin process pid to exit (or
// become a zombie), fails the test (killing it) if it did not, and returns
// how long it took.
func waitPluginExit(t *testing.T, pid int, limit time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for time.Since(start) < limit && syscall.Kill(pid, 0) == nil && !zombie(pid) {
		time.Sleep(50 * time.Millisecond)
	}
	if syscall.Kill(pid, 0) == nil && !zombie(pid) {
		syscall.Kill(pid, syscall.SIGKILL)
		t.Fatalf("docker plugin %d still running %s after its host was killed", pid, limit)
	}
	return time.Since(start)
}

package pocketci_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jtarchie/pocketci/host"
)

// TestDockerEphemeralNamespaceGoesWithItsHost kills, with SIGKILL, a library
// host (no Config.OrphanCleanup) that opened an ephemeral namespace in the
// docker plugin, which keeps its resources on host exit: the plugin itself
// closes that namespace, so its container and volumes are gone once the
// plugin has exited.
func TestDockerEphemeralNamespaceGoesWithItsHost(t *testing.T) {
	if err := platforms["docker"].available(); err != nil {
		if os.Getenv("ORCHESTRA_REQUIRE_DOCKER") == "1" {
			t.Fatalf("ORCHESTRA_REQUIRE_DOCKER=1 but %v", err)
		}
		t.Skipf("%v (set ORCHESTRA_REQUIRE_DOCKER=1 to fail instead)", err)
	}
	if _, err := os.Stat(filepath.Join("bin", host.Prefix+"docker")); err != nil {
		t.Fatalf("bin/%sdocker missing: run make build first", host.Prefix)
	}
	namespace := fmt.Sprintf("hostdeath-eph-%d", time.Now().UnixNano())
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), "DRIVERS_TEST_DOCKER_HOST_NS="+namespace, "DRIVERS_TEST_DOCKER_EPHEMERAL=1")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var pluginPID int
	if _, err := fmt.Fscan(stdout, &pluginPID); err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("read the plugin PID from the helper host: %v", err)
	}
	t.Cleanup(func() {
		exec.Command("sh", "-c", "docker rm -f $(docker ps -aq --filter label=pocketci.namespace="+namespace+") 2>/dev/null; "+
			"docker volume rm $(docker volume ls -q --filter label=pocketci.namespace="+namespace+") 2>/dev/null").Run()
	})
	if out, err := exec.Command("docker", "ps", "-q", "--filter", "label=pocketci.namespace="+namespace).Output(); err != nil || len(strings.Fields(string(out))) != 1 {
		t.Fatalf("before the host's death, want the task's container running, docker ps says %q (%v)", out, err)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	start := time.Now()
	// The plugin notices within half a second and closes the namespace
	// (docker stops a container with a grace period) before it exits.
	deadline := start.Add(30 * time.Second)
	for time.Now().Before(deadline) && syscall.Kill(pluginPID, 0) == nil && !zombie(pluginPID) {
		time.Sleep(50 * time.Millisecond)
	}
	if syscall.Kill(pluginPID, 0) == nil && !zombie(pluginPID) {
		syscall.Kill(pluginPID, syscall.SIGKILL)
		t.Fatalf("docker plugin %d still running 30 s after its host was killed", pluginPID)
	}
	t.Logf("host death to plugin exit: %s", time.Since(start).Round(time.Millisecond))
	left, err := platforms["docker"].leaks(namespace)
	if err != nil || len(left) > 0 {
		t.Fatalf("the ephemeral namespace outlived its host: %v (%v)", left, err)
	}
}

package pocketci_test

import (
	"fmt"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestDockerEphemeralNamespaceGoesWithItsHost kills, with SIGKILL, a library
// host (no Config.OrphanCleanup) that opened an ephemeral namespace in the
// docker plugin, which keeps its resources on host exit: the plugin itself
// closes that namespace, so its container and volumes are gone once the
// plugin has exited.
func TestDockerEphemeralNamespaceGoesWithItsHost(t *testing.T) {
	namespace := fmt.Sprintf("hostdeath-eph-%d", time.Now().UnixNano())
	cmd, pluginPID, _ := startDockerHelperHost(t, namespace, "DRIVERS_TEST_DOCKER_EPHEMERAL=1")
	if out, err := exec.Command("docker", "ps", "-q", "--filter", "label=pocketci.namespace="+namespace).Output(); err != nil || len(strings.Fields(string(out))) != 1 {
		t.Fatalf("before the host's death, want the task's container running, docker ps says %q (%v)", out, err)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	// The plugin notices within half a second and closes the namespace
	// (docker stops a container with a grace period) before it exits.
	took := waitPluginExit(t, pluginPID, 30*time.Second)
	t.Logf("host death to plugin exit: %s", took.Round(time.Millisecond))
	left, err := platforms["docker"].leaks(namespace)
	if err != nil || len(left) > 0 {
		t.Fatalf("the ephemeral namespace outlived its host: %v (%v)", left, err)
	}
}

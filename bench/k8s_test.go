package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/jtarchie/pocketci/host"
)

// requireK8s returns the k8s plugin's path and the kubectl to compare it
// with, skipping (failing under ORCHESTRA_REQUIRE_K8S=1) when KUBECONFIG
// names no cluster that answers (make cluster).
func requireK8s(b *testing.B) (plugin, kubectl string) {
	b.Helper()
	miss := b.Skipf
	if os.Getenv("ORCHESTRA_REQUIRE_K8S") == "1" {
		miss = b.Fatalf
	}
	kubectl = os.Getenv("POCKETCI_KUBECTL")
	if kubectl == "" {
		cache, _ := os.UserCacheDir()
		found, _ := filepath.Glob(filepath.Join(cache, "pocketci", "k8s", "*", "kubectl"))
		if len(found) == 0 {
			miss("no kubectl: run make cluster (it builds the one the cluster runs) or set POCKETCI_KUBECTL")
			return "", ""
		}
		kubectl = found[len(found)-1]
	}
	if os.Getenv("KUBECONFIG") == "" {
		miss("KUBECONFIG is not set (make cluster prints the test cluster's)")
	}
	if out, err := exec.Command(kubectl, "get", "--raw", "/readyz").CombinedOutput(); err != nil {
		miss("the cluster in KUBECONFIG does not answer (make cluster): %v: %s", err, out)
	}
	plugin, err := filepath.Abs("../bin/pocketci-driver-k8s")
	if err != nil {
		b.Fatal(err)
	}
	if _, err := os.Stat(plugin); err != nil {
		miss("k8s plugin not built (run make build): %v", err)
	}
	return plugin, kubectl
}

// BenchmarkEchoK8s: `echo hello` end to end through the k8s plugin (a pod
// created, followed to its end, deleted). Baseline: `kubectl run --rm -i
// --restart=Never` of the same pod with the kubectl built with the cluster.
func BenchmarkEchoK8s(b *testing.B) {
	b.Run("interleaved", func(b *testing.B) {
		path, kubectl := requireK8s(b)
		h := newHost(b)
		p, err := h.Load(path)
		if err != nil {
			b.Fatal(err)
		}
		d, err := p.Open(context.Background(), fmt.Sprintf("bench-%d", os.Getpid()), host.OpenOptions{})
		if err != nil {
			b.Fatal(err)
		}
		defer d.Close()
		i := 0
		interleave(b, 0,
			step{"baseline", func() (func(), error) {
				i++
				name := fmt.Sprintf("bench-kubectl-%d-%s", os.Getpid(), strconv.Itoa(i))
				out, err := exec.Command(kubectl, "run", name, "--rm", "-i", "--restart=Never", "--quiet",
					"--image=busybox", "--image-pull-policy=IfNotPresent", "--", "echo", "hello").Output()
				if err != nil || string(out) != "hello\n" {
					return nil, fmt.Errorf("kubectl run: %q, %v", out, err)
				}
				return nil, nil
			}},
			echoStep("plugin", d, "busybox"),
		)
	})
}

package pocketci_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jtarchie/pocketci/host"
	"github.com/jtarchie/pocketci/orchestra"
	"github.com/jtarchie/pocketci/orchestra/conformance"
	"github.com/jtarchie/pocketci/plugins/native"
)

// platform is what a plugin needs from the machine, and how to find what a
// namespace left behind, asked of the platform and not of the driver.
// k8sLargeOutputLoss is why the k8s plugin skips "large output": the test
// cluster's containerd 1.6 loses the tail of 1.2 million short lines in
// about a third of runs on a loaded machine, and nothing in the pod tells
// (plugins/k8s/README.md, docs/faults.md).
const k8sLargeOutputLoss = "containerd 1.6's CRI log writer loses the tail of millions of short lines under load (plugins/k8s/README.md)"

type platform struct {
	// available returns nil when the plugin's platform is there.
	available func() error
	leaks     func(namespace string) ([]string, error)
	timeout   time.Duration
	// skip: conformance cases the platform is known to fail (documented in
	// the plugin's README and docs/faults.md), with the reason.
	skip map[string]string
}

var platforms = map[string]platform{
	"native": {
		available: func() error { return nil },
		leaks:     native.Leaks,
	},
	"docker": {
		available: func() error {
			out, err := exec.Command("docker", "image", "inspect", "busybox:latest").CombinedOutput()
			if err != nil {
				return fmt.Errorf("docker engine or busybox:latest image missing (run make images): %v: %s", err, out)
			}
			return nil
		},
		leaks: func(namespace string) ([]string, error) {
			left, err := processLeaks(namespace)
			if err != nil {
				return nil, err
			}
			for _, kind := range []string{"container", "volume"} {
				args := []string{kind, "ls", "-q", "--filter", "label=pocketci.namespace=" + namespace}
				if kind == "container" {
					args = []string{"ps", "-aq", "--filter", "label=pocketci.namespace=" + namespace}
				}
				out, err := exec.Command("docker", args...).Output()
				if err != nil {
					return nil, fmt.Errorf("docker %s: %w", strings.Join(args, " "), err)
				}
				for _, id := range strings.Fields(string(out)) {
					left = append(left, kind+" "+id)
				}
			}
			return left, nil
		},
	},
	"k8s": {
		skip: map[string]string{"large output": k8sLargeOutputLoss},
		available: func() error {
			if os.Getenv("KUBECONFIG") == "" {
				return fmt.Errorf("KUBECONFIG is not set (make cluster prints the test cluster's)")
			}
			if out, err := exec.Command(kubectl(), "get", "--raw", "/readyz").CombinedOutput(); err != nil {
				return fmt.Errorf("the cluster in KUBECONFIG does not answer (make cluster): %v: %s", err, out)
			}
			return nil
		},
		leaks:   k8sLeaks,
		timeout: 3 * time.Minute,
	},
	"qemu": {
		available: func() error {
			if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
				return fmt.Errorf("qemu-system-x86_64 not installed: %w", err)
			}
			return nil
		},
		leaks:   processLeaks,
		timeout: 5 * time.Minute,
	},
}

// kubectl is the kubectl to ask the cluster with: $POCKETCI_KUBECTL, the
// one in PATH, or the test cluster's cached build.
func kubectl() string {
	if k := os.Getenv("POCKETCI_KUBECTL"); k != "" {
		return k
	}
	if k, err := exec.LookPath("kubectl"); err == nil {
		return k
	}
	cache, _ := os.UserCacheDir()
	if found, _ := filepath.Glob(filepath.Join(cache, "pocketci", "k8s", "*", "kubectl")); len(found) > 0 {
		return found[len(found)-1]
	}
	return "kubectl"
}

// k8sLeaks asks the cluster for pods and PVCs labelled with namespace.
func k8sLeaks(namespace string) ([]string, error) {
	kns := os.Getenv("POCKETCI_K8S_NAMESPACE")
	if kns == "" {
		kns = "default"
	}
	label := "pocketci.namespace=" + orchestra.SafeName(orchestra.DNSLabelRule, namespace)
	out, err := exec.Command(kubectl(), "-n", kns, "get", "pods,pvc", "-l", label, "-o", "name").Output()
	if err != nil {
		return nil, fmt.Errorf("kubectl get pods,pvc -l %s: %w", label, err)
	}
	return strings.Fields(string(out)), nil
}

// processLeaks finds live processes whose command line or working directory
// mentions namespace.
func processLeaks(namespace string) ([]string, error) {
	procs, err := filepath.Glob("/proc/[0-9]*")
	if err != nil {
		return nil, err
	}
	var left []string
	for _, p := range procs {
		cmdline, _ := os.ReadFile(filepath.Join(p, "cmdline"))
		cwd, _ := os.Readlink(filepath.Join(p, "cwd"))
		if strings.Contains(string(cmdline), namespace) || strings.Contains(cwd, namespace) {
			left = append(left, fmt.Sprintf("process %s: %s", filepath.Base(p), strings.ReplaceAll(string(cmdline), "\x00", " ")))
		}
	}
	return left, nil
}

// TestDriversThroughPlugins runs the conformance suite against every plugin
// binary in bin/, through the host, as a caller of orchestra would see it.
func TestDriversThroughPlugins(t *testing.T) {
	bin, err := filepath.Abs("bin")
	if err != nil {
		t.Fatal(err)
	}
	binaries, _ := filepath.Glob(filepath.Join(bin, host.Prefix+"*"))
	if len(binaries) == 0 {
		t.Fatalf("no %s* binaries in %s: run make build first", host.Prefix, bin)
	}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	h, err := host.New(host.Config{Dirs: []string{bin}, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := h.Close(); err != nil {
			t.Errorf("host close: %v", err)
		}
	})
	registry := h.Registry()

	for _, p := range h.Plugins() {
		t.Run(p.Name, func(t *testing.T) {
			plat, ok := platforms[p.Name]
			if !ok {
				t.Fatalf("plugin %s in bin/ has no platform entry in drivers_test.go", p.Name)
			}
			if err := plat.available(); err != nil {
				if os.Getenv("ORCHESTRA_REQUIRE_"+strings.ToUpper(p.Name)) == "1" {
					t.Fatalf("ORCHESTRA_REQUIRE_%s=1 but %v", strings.ToUpper(p.Name), err)
				}
				t.Skipf("%v (set ORCHESTRA_REQUIRE_%s=1 to fail instead)", err, strings.ToUpper(p.Name))
			}
			if _, ok := registry.Provider(p.Name); !ok {
				t.Fatalf("plugin %s is not in the host's driver registry: %v", p.Name, p.Err())
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			info, err := p.Info(ctx)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s: version %s, protocol %s, sdk %s", p.Name, info.PluginVersion, info.ProtocolVersion, info.SDKVersion)
			conformance.Run(t, conformance.Options{
				New: func(ns string) (orchestra.Driver, error) {
					return registry.CreateDriver(context.Background(), p.Name, ns, nil, logger)
				},
				Image:   "busybox",
				Timeout: plat.timeout,
				Leaks:   plat.leaks,
				Skip:    plat.skip,
			})
		})
	}
}

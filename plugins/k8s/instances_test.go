package k8s

import (
	"bytes"
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/jtarchie/pocketci/orchestra"
)

// testClient is a client for the cluster of the environment.
func testClient(tb testing.TB, cfg Config) kubernetes.Interface {
	tb.Helper()
	s, err := cfg.resolve()
	if err != nil {
		tb.Fatal(err)
	}
	return kubernetes.NewForConfigOrDie(s.rest)
}

// newK8sNamespace creates a Kubernetes namespace for the test, waits until
// pods can be made in it (its default ServiceAccount exists) and deletes it
// at the end.
func newK8sNamespace(ctx context.Context, tb testing.TB, client kubernetes.Interface, prefix string) string {
	tb.Helper()
	ns, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: prefix + "-"}}, metav1.CreateOptions{})
	if err != nil {
		tb.Fatalf("create namespace: %v", err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := client.CoreV1().Namespaces().Delete(ctx, ns.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			tb.Errorf("delete namespace %s: %v", ns.Name, err)
		}
	})
	for {
		_, err := client.CoreV1().ServiceAccounts(ns.Name).Get(ctx, "default", metav1.GetOptions{})
		if err == nil {
			return ns.Name
		}
		select {
		case <-ctx.Done():
			tb.Fatalf("namespace %s has no default ServiceAccount: %v", ns.Name, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// adminKubeconfig returns the path KUBECONFIG names (one file) and its
// contents.
func adminKubeconfig(tb testing.TB) (string, string) {
	tb.Helper()
	path := os.Getenv(clientcmd.RecommendedConfigPathEnvVar)
	if path == "" || strings.Contains(path, string(os.PathListSeparator)) {
		tb.Skip("KUBECONFIG does not name one file")
	}
	data, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	return path, string(data)
}

// TestTwoConfigsSideBySide: two drivers in one process, one with the admin
// kubeconfig as a path in the Kubernetes namespace "default", the other
// with the same kubeconfig inline in a second Kubernetes namespace, run
// tasks at the same time; each one's pods and claims land in its own
// Kubernetes namespace, and neither finds the other's containers.
func TestTwoConfigsSideBySide(t *testing.T) {
	ctx := testContext(t)
	env := requireCluster(t)
	path, data := adminKubeconfig(t)
	second := newK8sNamespace(ctx, t, testClient(t, env), "kt-second")
	cfgs := []Config{
		{Kubeconfig: path, K8sNamespace: "default", VolumeSize: "64Mi"},
		{KubeconfigData: data, K8sNamespace: second, VolumeSize: "32Mi"},
	}
	drivers := []*Driver{newTestDriverWith(t, newNamespace("side-a"), cfgs[0]), newTestDriverWith(t, newNamespace("side-b"), cfgs[1])}
	// Both are started before either is waited for.
	var started []orchestra.Container
	for i, d := range drivers {
		c, err := d.RunContainer(ctx, orchestra.Task{ID: "side", Image: testImage,
			Mounts:  orchestra.Mounts{{Name: "data", Path: "data"}},
			Command: []string{"sh", "-c", "echo " + d.namespace + " | tee data/f"}})
		if err != nil {
			t.Fatalf("driver %d: %v", i, err)
		}
		started = append(started, c)
	}
	client := testClient(t, env)
	for i, d := range drivers {
		c, kns := started[i], cfgs[i].K8sNamespace
		st := waitDone(ctx, t, c)
		var out, errb bytes.Buffer
		if err := c.Logs(ctx, &out, &errb, false); err != nil || st.ExitCode() != 0 || out.String() != d.namespace+"\n" {
			t.Fatalf("driver %d: exit %d stdout %q stderr %q, %v", i, st.ExitCode(), out.String(), errb.String(), err)
		}
		if _, err := client.CoreV1().Pods(kns).Get(ctx, c.ID(), metav1.GetOptions{}); err != nil {
			t.Errorf("driver %d: its pod %s is not in %s: %v", i, c.ID(), kns, err)
		}
		claim, err := client.CoreV1().PersistentVolumeClaims(kns).Get(ctx, claimName(d.namespace, "data"), metav1.GetOptions{})
		if err != nil {
			t.Fatalf("driver %d: its claim is not in %s: %v", i, kns, err)
		}
		if got := claim.Spec.Resources.Requests[corev1.ResourceStorage]; got.String() != cfgs[i].VolumeSize {
			t.Errorf("driver %d: claim requests %s, want its config's %s", i, got.String(), cfgs[i].VolumeSize)
		}
		other := drivers[1-i]
		if _, err := other.GetContainer(ctx, c.ID()); !errors.Is(err, orchestra.ErrContainerNotFound) {
			t.Errorf("driver %d's container found through the other driver: %v", i, err)
		}
	}
}

// TestGetContainer: a container is found by its ID, also through another
// instance of the namespace; the ID of another namespace's pod in the same
// Kubernetes namespace, an unknown name and a string that is no pod name
// are ErrContainerNotFound.
func TestGetContainer(t *testing.T) {
	ctx := testContext(t)
	ns := newNamespace("getc")
	d := newTestDriver(t, ns)
	other := newTestDriver(t, newNamespace("getc-other"))
	mine := runToEnd(ctx, t, d, orchestra.Task{ID: "mine", Image: testImage, Command: []string{"echo", "mine"}})
	theirs := runToEnd(ctx, t, other, orchestra.Task{ID: "theirs", Image: testImage, Command: []string{"echo", "theirs"}})
	again, err := New(ns, Config{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	tests := []struct {
		name  string
		via   *Driver
		id    string
		found bool
	}{
		{"own id", d, mine.container.ID(), true},
		{"own id through a second instance", again, mine.container.ID(), true},
		{"another namespace's pod", d, theirs.container.ID(), false},
		{"unknown pod", d, "no-such-pod", false},
		{"no pod name", d, "Not_A/Pod", false},
		{"empty", d, "", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := tc.via.GetContainer(ctx, tc.id)
			if !tc.found {
				if !errors.Is(err, orchestra.ErrContainerNotFound) {
					t.Fatalf("GetContainer(%q): %v, want ErrContainerNotFound", tc.id, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var out bytes.Buffer
			if err := c.Logs(ctx, &out, nil, false); err != nil || out.String() != "mine\n" || c.ID() != tc.id {
				t.Fatalf("found container %q: logs %q, %v", c.ID(), out.String(), err)
			}
		})
	}
}

// TestCommandNotFound: a command that does not exist exits 127, and the
// runtime's message is on the task's stderr: the same bytes on every call,
// with and without follow, also through a second instance.
func TestCommandNotFound(t *testing.T) {
	ctx := testContext(t)
	ns := newNamespace("notfound")
	d := newTestDriver(t, ns)
	r := runToEnd(ctx, t, d, orchestra.Task{ID: "nf", Image: testImage, Command: []string{"no-such-command-k8s", "arg"}})
	if r.exitCode != 127 || r.stdout != "" || !strings.Contains(r.stderr, "no-such-command-k8s") || !strings.HasSuffix(r.stderr, "\n") {
		t.Fatalf("exit %d stdout %q stderr %q; want 127, nothing, and a line naming the command", r.exitCode, r.stdout, r.stderr)
	}
	again, err := New(ns, Config{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	found, err := again.GetContainer(ctx, r.container.ID())
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []orchestra.Container{r.container, found} {
		for _, follow := range []bool{false, true} {
			var out, errb bytes.Buffer
			if err := c.Logs(ctx, &out, &errb, follow); err != nil || out.Len() != 0 || errb.String() != r.stderr {
				t.Fatalf("Logs(follow %v): stdout %q stderr %q, %v; want stderr %q", follow, out.String(), errb.String(), err, r.stderr)
			}
		}
	}
}

// TestSizeAndWorkDir: a mount's SizeGB is the request of the claim the task
// creates (an existing claim keeps its size), and WorkDir is the pod's
// working directory.
func TestSizeAndWorkDir(t *testing.T) {
	ctx := testContext(t)
	ns := newNamespace("size")
	d := newTestDriver(t, ns)
	if _, err := d.CreateVolume(ctx, "before", 100); err != nil {
		t.Fatal(err)
	}
	r := runToEnd(ctx, t, d, orchestra.Task{ID: "sized", Image: testImage, WorkDir: "work/dir",
		ContainerLimits: orchestra.ContainerLimits{CPUKind: "performance"},
		Mounts:          orchestra.Mounts{{Name: "sized", Path: "/sized", SizeGB: 2}, {Name: "before", Path: "/before", SizeGB: 5}},
		Command:         []string{"pwd"}})
	if r.exitCode != 0 || r.stdout != "/work/dir\n" {
		t.Fatalf("exit %d stdout %q stderr %q, want 0 and /work/dir", r.exitCode, r.stdout, r.stderr)
	}
	client := kubernetes.NewForConfigOrDie(d.cfg.rest)
	for name, want := range map[string]string{"sized": "2Gi", "before": "100Mi"} {
		claim, err := client.CoreV1().PersistentVolumeClaims(d.cfg.k8sNamespace).Get(ctx, claimName(ns, name), metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if got := claim.Spec.Resources.Requests[corev1.ResourceStorage]; got.Cmp(resource.MustParse(want)) != 0 {
			t.Errorf("claim of %s requests %s, want %s", name, got.String(), want)
		}
	}
}

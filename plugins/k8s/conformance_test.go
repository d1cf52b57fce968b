package k8s

import (
	"context"
	"testing"
	"time"

	"github.com/jtarchie/pocketci/orchestra"
	"github.com/jtarchie/pocketci/orchestra/conformance"
)

// TestConformance runs the shared suite against the driver in process,
// against the cluster KUBECONFIG names.
func TestConformance(t *testing.T) {
	cfg := requireCluster(t)
	conformance.Run(t, conformance.Options{
		New: func(namespace string) (orchestra.Driver, error) {
			return Provider().NewDriver(context.Background(), namespace, nil, verboseLogger(t))
		},
		Image:   testImage,
		Timeout: 3 * time.Minute,
		// The test cluster's containerd 1.6 loses the tail of 1.2 million
		// short lines in about a third of runs on a loaded machine, and
		// nothing in the pod tells (README.md, docs/faults.md).
		Skip: map[string]string{"large output": "containerd 1.6's CRI log writer loses the tail of millions of short lines under load (README.md)"},
		Leaks: func(namespace string) ([]string, error) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			return Leaks(ctx, cfg, namespace)
		},
	})
}

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
			if testing.Verbose() {
				return NewWithConfig(namespace, testLogger(t), cfg)
			}
			return NewWithConfig(namespace, nil, cfg)
		},
		Image:   testImage,
		Timeout: 3 * time.Minute,
		Leaks: func(namespace string) ([]string, error) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			return Leaks(ctx, cfg, namespace)
		},
	})
}

package docker

import (
	"context"
	"testing"
	"time"

	"github.com/jtarchie/pocketci/orchestra"
	"github.com/jtarchie/pocketci/orchestra/conformance"
)

// TestConformance runs the shared suite against the driver in process,
// built by its provider with the default config.
func TestConformance(t *testing.T) {
	requireDocker(t)
	conformance.Run(t, conformance.Options{
		New: func(namespace string) (orchestra.Driver, error) {
			return Provider().NewDriver(t.Context(), namespace, nil, maybeTestLogger(t))
		},
		Image:   testImage,
		Timeout: 3 * time.Minute,
		Leaks: func(namespace string) ([]string, error) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			return Leaks(ctx, Config{}, namespace)
		},
	})
}

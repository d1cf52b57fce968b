package conformance_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/jtarchie/pocketci/orchestra"
	"github.com/jtarchie/pocketci/orchestra/conformance"
	"github.com/jtarchie/pocketci/plugins/native"
)

// Run the suite outside `go test`, as `orchestra conformance` does, and
// report each case. In a Go test, conformance.Run(t, opts) runs the same
// cases as subtests.
func ExampleRunAll() {
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	opts := conformance.Options{
		New: func(ns string) (orchestra.Driver, error) {
			return native.Provider().NewDriver(context.Background(), ns, nil, logger)
		},
		Leaks:   native.Leaks,
		Timeout: time.Minute,
	}
	failed := 0
	results := conformance.RunAll(context.Background(), opts, func(r conformance.Result) {
		if !r.Passed && !r.Skipped {
			failed++
			fmt.Println("FAIL", r.Name, r.Error)
		}
	})
	fmt.Printf("%d cases, %d failed\n", len(results), failed)
	// Output: 40 cases, 0 failed
}

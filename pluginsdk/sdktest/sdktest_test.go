package sdktest_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/jtarchie/pocketci/orchestra"
	"github.com/jtarchie/pocketci/orchestra/conformance"
	"github.com/jtarchie/pocketci/plugins/native"
	"github.com/jtarchie/pocketci/pluginsdk/sdktest"
)

// TestNativeConformanceThroughTheHarness: the bundled native driver passes
// the whole suite across the wire, in process.
func TestNativeConformanceThroughTheHarness(t *testing.T) {
	t.Setenv(native.RootEnv, t.TempDir())
	p := sdktest.Provider(t, native.Provider())
	conformance.Run(t, conformance.Options{New: func(ns string) (orchestra.Driver, error) {
		return p.NewDriver(t.Context(), ns, nil, nil)
	}})
}

// TestHarnessReportsThePluginsErrors: an error a driver returns crosses the
// wire and keeps its identity, as from a plugin binary.
func TestHarnessReportsThePluginsErrors(t *testing.T) {
	t.Setenv(native.RootEnv, t.TempDir())
	p := sdktest.Provider(t, native.Provider())
	d, err := p.NewDriver(t.Context(), "errors", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	_, err = d.GetContainer(context.Background(), "nope")
	if !errors.Is(err, orchestra.ErrContainerNotFound) || !strings.Contains(err.Error(), "plugin native: GetContainer") {
		t.Fatalf("GetContainer of an unknown task: %v, want the plugin's not-found error", err)
	}
}

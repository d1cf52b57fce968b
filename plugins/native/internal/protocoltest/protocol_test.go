//go:build linux

package protocoltest

import (
	"testing"

	"github.com/jtarchie/pocketci/orchestra"
	"github.com/jtarchie/pocketci/orchestra/conformance"
	"github.com/jtarchie/pocketci/plugins/native"
	"github.com/jtarchie/pocketci/pluginsdk/sdktest"
)

func TestConformanceThroughThePluginProtocol(t *testing.T) {
	t.Setenv(native.RootEnv, t.TempDir())
	p := sdktest.Provider(t, native.Provider())
	conformance.Run(t, conformance.Options{
		New: func(ns string) (orchestra.Driver, error) {
			return p.NewDriver(t.Context(), ns, nil, nil)
		},
		Leaks: native.Leaks,
	})
}

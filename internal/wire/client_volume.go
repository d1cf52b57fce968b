package wire

import (
	"context"
	"sync/atomic"

	"github.com/jtarchie/pocketci/orchestra"
	"github.com/jtarchie/pocketci/proto/driverv1"
)

// clientVolume is the host side of a volume in a plugin. Its twin is
// server_container.go.
type clientVolume struct {
	driver  *clientDriver
	ref     *driverv1.VolumeRef
	cleaned atomic.Bool
}

var _ orchestra.Volume = (*clientVolume)(nil)

// Name is the volume's name.
func (v *clientVolume) Name() string { return v.ref.GetName() }

// Path is where the plugin's driver says the volume is.
func (v *clientVolume) Path() string { return v.ref.GetPath() }

// Cleanup removes the volume in the plugin. The plugin forgets the volume's
// handle once it is removed; removing it again is a no-op here.
func (v *clientVolume) Cleanup(ctx context.Context) error {
	if v.cleaned.Load() {
		return nil
	}
	_, err := v.driver.client.rpc.CleanupVolume(ctx, v.ref)
	if err == nil {
		v.cleaned.Store(true)
	}
	return v.driver.wrap("CleanupVolume", err)
}

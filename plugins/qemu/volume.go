package qemu

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/jtarchie/pocketci/orchestra"
)

// Volume is a directory in the namespace's directory on the host, which the
// VM reaches over its 9p share.
type Volume struct {
	driver   *Driver
	name     string
	hostDir  string
	guestDir string
}

var _ orchestra.Volume = (*Volume)(nil)

// Name returns the name given to CreateVolume.
func (v *Volume) Name() string { return v.name }

// Path is the volume's directory on this machine.
func (v *Volume) Path() string { return v.hostDir }

// Cleanup removes the volume's directory. It is idempotent.
func (v *Volume) Cleanup(ctx context.Context) error {
	d := v.driver
	d.mu.Lock()
	if d.volumes[v.name] == v {
		delete(d.volumes, v.name)
	}
	d.mu.Unlock()
	if err := os.RemoveAll(v.hostDir); err != nil {
		return fmt.Errorf("remove volume %q: %w", v.name, err)
	}
	return nil
}

// volumeDir is the host directory of the volume name.
func (d *Driver) volumeDir(name string) string {
	return filepath.Join(d.share, "volumes", orchestra.SafeName(orchestra.PathNameRule, name))
}

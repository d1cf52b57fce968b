package docker

import (
	"context"
	"fmt"

	"github.com/jtarchie/pocketci/orchestra"
)

// Volume is a Docker volume named "{namespace}-{name}" (sanitized) and
// labelled with the namespace. It implements orchestra.Volume.
type Volume struct {
	driver     *Driver
	name       string // as given to CreateVolume or a Mount
	dockerName string // the engine's name
	mountpoint string // where the engine keeps its files
}

var _ orchestra.Volume = (*Volume)(nil)

// Path is the volume's Mountpoint as the engine reports it: a directory on
// the engine's machine (inside the engine's own mount namespace for a
// rootless engine), not necessarily on the driver's.
func (v *Volume) Path() string { return v.mountpoint }

// Name returns the volume's name as given to CreateVolume.
func (v *Volume) Name() string { return v.name }

// Cleanup removes the volume. An absent volume is not an error, so calling
// it again does nothing. A volume still mounted by a container that is not
// being removed cannot be removed: the engine's error is returned.
func (v *Volume) Cleanup(ctx context.Context) error {
	if err := removeVolume(ctx, v.driver.client, v.dockerName); err != nil {
		return fmt.Errorf("docker: remove volume %q (%s): %w", v.name, v.dockerName, err)
	}
	v.driver.mu.Lock()
	if v.driver.volumes[v.name] == v {
		delete(v.driver.volumes, v.name)
	}
	v.driver.mu.Unlock()
	return nil
}

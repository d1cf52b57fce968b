package docker

import (
	"context"
	"fmt"
)

// Volume is a Docker volume named "{namespace}-{name}" (sanitized) and
// labelled with the namespace. It implements orchestra.Volume.
type Volume struct {
	driver     *Driver
	name       string // as given to CreateVolume or a Mount
	dockerName string // the engine's name
}

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

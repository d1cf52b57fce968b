package qemu

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/jtarchie/pocketci/orchestra"
	"github.com/jtarchie/pocketci/orchestra/volumetar"
)

// A qemu volume is a directory in the namespace's directory on the host, so
// its files move in and out with package volumetar on the host, without a
// VM (none is booted for it). The guest mounts the share with cache=none,
// so a task sees what was extracted at once, and the host sees at once what
// a task wrote.

var _ orchestra.VolumeDataAccessor = (*Driver)(nil)

// CopyToVolume extracts the tar archive read from reader into the volume,
// creating the volume when it does not exist. An unsafe entry (absolute,
// climbing out with "..", through a link, a device) is refused with an
// error naming it that wraps volumetar.ErrUnsafeEntry; what came before it
// stays in the volume.
func (d *Driver) CopyToVolume(ctx context.Context, volumeName string, reader io.Reader) error {
	if err := orchestra.ValidateVolumeName(volumeName); err != nil {
		return fmt.Errorf("qemu: copy into volume: %w", err)
	}
	v, err := d.volume(volumeName)
	if err != nil {
		return fmt.Errorf("qemu: copy into volume: %w", err)
	}
	if err := volumetar.Extract(ctx, v.hostDir, reader); err != nil {
		return fmt.Errorf("qemu: copy into volume %q: %w", volumeName, err)
	}
	return nil
}

// CopyFromVolume returns a tar archive of the whole volume, streamed as the
// caller reads it. A volume that does not exist is an error wrapping
// orchestra.ErrVolumeNotFound.
func (d *Driver) CopyFromVolume(ctx context.Context, volumeName string) (io.ReadCloser, error) {
	dir, err := d.existingVolume(volumeName)
	if err != nil {
		return nil, fmt.Errorf("qemu: copy from volume: %w", err)
	}
	rc, err := volumetar.Open(ctx, dir)
	if err != nil {
		return nil, fmt.Errorf("qemu: copy from volume %q: %w", volumeName, err)
	}
	return rc, nil
}

// ReadFilesFromVolume returns a tar archive of the given files and
// directories of the volume (relative to its root), streamed as the caller
// reads it. A path that escapes the volume (volumetar.ErrUnsafePath) or does
// not exist (fs.ErrNotExist) is an error of this call, before any byte. No
// paths is an empty archive.
func (d *Driver) ReadFilesFromVolume(ctx context.Context, volumeName string, filePaths ...string) (io.ReadCloser, error) {
	dir, err := d.existingVolume(volumeName)
	if err != nil {
		return nil, fmt.Errorf("qemu: read files from volume: %w", err)
	}
	rc, err := volumetar.ReadFiles(ctx, dir, filePaths...)
	if err != nil {
		return nil, fmt.Errorf("qemu: read files from volume %q: %w", volumeName, err)
	}
	return rc, nil
}

// existingVolume returns the host directory of the volume name, which must
// exist (made by this or another instance of the namespace).
func (d *Driver) existingVolume(name string) (string, error) {
	if err := orchestra.ValidateVolumeName(name); err != nil {
		return "", err
	}
	d.mu.Lock()
	closed := d.closed
	d.mu.Unlock()
	if closed {
		return "", fmt.Errorf("volume %q: %w", name, orchestra.ErrClosed)
	}
	dir := d.volumeDir(name)
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "", fmt.Errorf("volume %q in namespace %q: %w", name, d.namespace, orchestra.ErrVolumeNotFound)
	case err != nil:
		return "", fmt.Errorf("volume %q: %w", name, err)
	case !fi.IsDir():
		return "", fmt.Errorf("volume %q: %s is not a directory", name, dir)
	}
	return dir, nil
}

// volumeDir is the host directory of the volume name.
func (d *Driver) volumeDir(name string) string {
	return filepath.Join(d.share, "volumes", orchestra.SafeName(orchestra.PathNameRule, name))
}

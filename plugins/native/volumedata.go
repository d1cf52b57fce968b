//go:build linux

package native

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"github.com/jtarchie/pocketci/orchestra"
	"github.com/jtarchie/pocketci/orchestra/volumetar"
)

// A native volume is a directory on this host, so its files move in and out
// with package volumetar directly: Extract confines every write to the
// volume's directory and refuses unsafe entries by name; Archive streams.

var _ orchestra.VolumeDataAccessor = (*Driver)(nil)

// CopyToVolume extracts the tar archive read from reader into the volume,
// creating the volume when it does not exist (as pocketci's native does). An
// unsafe entry (absolute, climbing out with "..", through a link, a device)
// is refused with an error naming it that wraps volumetar.ErrUnsafeEntry;
// what came before it stays in the volume.
func (d *Driver) CopyToVolume(ctx context.Context, volumeName string, reader io.Reader) error {
	d.mu.Lock()
	v, err := d.volumeLocked(volumeName)
	d.mu.Unlock()
	if err != nil {
		return fmt.Errorf("native: copy into volume: %w", err)
	}
	if err := volumetar.Extract(ctx, v.dir, reader); err != nil {
		return fmt.Errorf("native: copy into volume %q: %w", volumeName, err)
	}
	return nil
}

// CopyFromVolume returns a tar archive of the whole volume, streamed as the
// caller reads it. A volume that does not exist is an error wrapping
// orchestra.ErrVolumeNotFound.
func (d *Driver) CopyFromVolume(ctx context.Context, volumeName string) (io.ReadCloser, error) {
	dir, err := d.existingVolume(volumeName)
	if err != nil {
		return nil, fmt.Errorf("native: copy from volume: %w", err)
	}
	rc, err := volumetar.Open(ctx, dir)
	if err != nil {
		return nil, fmt.Errorf("native: copy from volume %q: %w", volumeName, err)
	}
	return rc, nil
}

// ReadFilesFromVolume returns a tar archive of the given files and
// directories of the volume (relative to its root), streamed as the caller
// reads it. A path that escapes the volume (volumetar.ErrUnsafePath) or does
// not exist (fs.ErrNotExist) is an error of this call, before any byte.
func (d *Driver) ReadFilesFromVolume(ctx context.Context, volumeName string, filePaths ...string) (io.ReadCloser, error) {
	dir, err := d.existingVolume(volumeName)
	if err != nil {
		return nil, fmt.Errorf("native: read files from volume: %w", err)
	}
	rc, err := volumetar.ReadFiles(ctx, dir, filePaths...)
	if err != nil {
		return nil, fmt.Errorf("native: read files from volume %q: %w", volumeName, err)
	}
	return rc, nil
}

// existingVolume returns the directory of volume name, which must exist
// (created by this or another instance of the namespace).
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

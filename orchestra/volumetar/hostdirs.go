package volumetar

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"github.com/jtarchie/pocketci/orchestra"
)

// HostDirs is orchestra.VolumeDataAccessor for a driver whose volumes are
// directories on this host (native; qemu, whose guests mount them over
// 9p): the files move with Extract and Archive directly, with no task or
// VM. A driver embeds it, filled in when the driver is made.
type HostDirs struct {
	// Driver starts every error: "native", "qemu".
	Driver string
	// Namespace is named when a volume does not exist.
	Namespace string
	// Dir is the directory of volume name, whether it exists or not.
	Dir func(name string) string
	// Create makes volume name, as a task's mount would, and returns its
	// directory. It refuses a bad name and a closed driver.
	Create func(name string) (string, error)
	// Closed reports whether the driver is closed.
	Closed func() bool
}

var _ orchestra.VolumeDataAccessor = HostDirs{}

// CopyToVolume extracts the tar archive read from r into the volume,
// creating the volume when it does not exist. An unsafe entry (absolute,
// climbing out with "..", through a link, a device) is refused with an
// error naming it that wraps ErrUnsafeEntry; what came before it stays in
// the volume.
func (h HostDirs) CopyToVolume(ctx context.Context, volume string, r io.Reader) error {
	dir, err := h.Create(volume)
	if err != nil {
		return fmt.Errorf("%s: copy into volume: %w", h.Driver, err)
	}
	if err := Extract(ctx, dir, r); err != nil {
		return fmt.Errorf("%s: copy into volume %q: %w", h.Driver, volume, err)
	}
	return nil
}

// CopyFromVolume returns a tar archive of the whole volume, streamed as the
// caller reads it. A volume that does not exist is an error wrapping
// orchestra.ErrVolumeNotFound.
func (h HostDirs) CopyFromVolume(ctx context.Context, volume string) (io.ReadCloser, error) {
	dir, err := h.existing(volume)
	if err != nil {
		return nil, fmt.Errorf("%s: copy from volume: %w", h.Driver, err)
	}
	rc, err := Open(ctx, dir)
	if err != nil {
		return nil, fmt.Errorf("%s: copy from volume %q: %w", h.Driver, volume, err)
	}
	return rc, nil
}

// ReadFilesFromVolume returns a tar archive of the given files and
// directories of the volume (relative to its root), streamed as the caller
// reads it. A path that escapes the volume (ErrUnsafePath) or does not
// exist (fs.ErrNotExist) is an error of this call, before any byte. No
// paths is an empty archive.
func (h HostDirs) ReadFilesFromVolume(ctx context.Context, volume string, paths ...string) (io.ReadCloser, error) {
	dir, err := h.existing(volume)
	if err != nil {
		return nil, fmt.Errorf("%s: read files from volume: %w", h.Driver, err)
	}
	rc, err := ReadFiles(ctx, dir, paths...)
	if err != nil {
		return nil, fmt.Errorf("%s: read files from volume %q: %w", h.Driver, volume, err)
	}
	return rc, nil
}

// existing returns the directory of volume name, which must exist (made by
// this or another instance of the namespace).
func (h HostDirs) existing(name string) (string, error) {
	if err := orchestra.ValidateVolumeName(name); err != nil {
		return "", err
	}
	if h.Closed() {
		return "", fmt.Errorf("volume %q: %w", name, orchestra.ErrClosed)
	}
	dir := h.Dir(name)
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "", fmt.Errorf("volume %q in namespace %q: %w", name, h.Namespace, orchestra.ErrVolumeNotFound)
	case err != nil:
		return "", fmt.Errorf("volume %q: %w", name, err)
	case !fi.IsDir():
		return "", fmt.Errorf("volume %q: %s is not a directory", name, dir)
	}
	return dir, nil
}

package qemu

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// The driver brings its guest side itself: at every boot it copies
// pocketci-guestd (guest/guestd, built by guest/build.sh next to the
// kernel) onto the share, and the setup script starts it in the guest.
// The guest image only needs busybox at /bin/busybox, qemu-ga, and the
// share mounted at /mnt/share.
//
// The daemon runs every task (see guestproto and guest/guestd): the task's
// cgroup (/sys/fs/cgroup/slot-<slot>, limits set on it), its user, its
// stdout and stderr as pipes copied into the files on the share, its
// stdin fed from the chunk files the host writes, and for a task in an
// image its own mount namespace with the image under a per-task overlay,
// /proc, /dev, /sys and the volumes. When the task exits, whatever it
// left running is killed through cgroup.kill, and its exit code is pushed
// to the host.

// writeGuestScripts puts the guest's helpers in dir (the share's .pocketci).
func writeGuestScripts(dir, guestd string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("guest helpers: %w", err)
	}
	src, err := os.Open(guestd)
	if err != nil {
		return fmt.Errorf("guest task daemon: %w (build the guest with plugins/qemu/guest/build.sh)", err)
	}
	defer src.Close()
	// Other driver instances of the namespace share dir: each writes its
	// own temporary file and renames it into place.
	dst, err := os.CreateTemp(dir, ".guestd-*.tmp")
	if err != nil {
		return fmt.Errorf("copy the guest task daemon: %w", err)
	}
	tmp := dst.Name()
	_, err = io.Copy(dst, src)
	if err == nil {
		err = dst.Chmod(0o755)
	}
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(dir, "guestd"))
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("copy the guest task daemon: %w", err)
	}
	return nil
}

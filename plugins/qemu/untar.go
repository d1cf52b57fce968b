package qemu

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"
)

// untar unpacks a flattened root filesystem tar (a container export) into
// root. Entry names are confined to root: a name with "..", or one whose
// parent is a symlink, is refused, so a hostile image cannot write outside
// the cache. Owners, modes (setuid included) and times are kept; device
// nodes and FIFOs are skipped (the guest mounts its own /dev).
func untar(r io.Reader, root string) error {
	tr := tar.NewReader(r)
	var dirs []dirTime
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("read tar: %w", err)
		}
		rel, err := confined(h.Name)
		if err != nil {
			return err
		}
		if rel == "" {
			continue // the root itself
		}
		if err := noSymlinkParents(root, rel); err != nil {
			return err
		}
		if err := unpackEntry(tr, h, root, rel); err != nil {
			return err
		}
		if h.Typeflag == tar.TypeDir {
			dirs = append(dirs, dirTime{filepath.Join(root, rel), h.ModTime})
		}
	}
	for i := len(dirs) - 1; i >= 0; i-- { // children first changed their parents' times
		_ = os.Chtimes(dirs[i].path, dirs[i].t, dirs[i].t)
	}
	return nil
}

// dirTime is a directory's time, set once everything in it is unpacked.
type dirTime struct {
	path string
	t    time.Time
}

// unpackEntry writes entry h (its body read from tr) at rel below root,
// with its owner, mode and time.
func unpackEntry(tr io.Reader, h *tar.Header, root, rel string) error {
	dst := filepath.Join(root, rel)
	switch h.Typeflag {
	case tar.TypeDir:
		if err := os.Mkdir(dst, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("unpack %s: %w", h.Name, err)
		}
	case tar.TypeReg:
		if err := writeFile(dst, tr); err != nil {
			return fmt.Errorf("unpack %s: %w", h.Name, err)
		}
	case tar.TypeSymlink:
		_ = os.Remove(dst)
		if err := os.Symlink(h.Linkname, dst); err != nil {
			return fmt.Errorf("unpack %s: %w", h.Name, err)
		}
	case tar.TypeLink:
		// Shares the target's inode: owner and mode are the target's.
		return hardLink(h, root, dst)
	default:
		return nil // devices, FIFOs: not needed in a root filesystem the guest mounts /dev over
	}
	if err := os.Lchown(dst, h.Uid, h.Gid); err != nil && !errors.Is(err, os.ErrPermission) {
		return fmt.Errorf("unpack %s: chown: %w", h.Name, err)
	}
	if h.Typeflag != tar.TypeSymlink {
		if err := os.Chmod(dst, fileMode(h.Mode)); err != nil {
			return fmt.Errorf("unpack %s: chmod: %w", h.Name, err)
		}
		_ = os.Chtimes(dst, h.ModTime, h.ModTime)
	}
	return nil
}

// writeFile replaces dst with a new file holding what r reads.
func writeFile(dst string, r io.Reader) error {
	_ = os.Remove(dst)
	f, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	_, err = io.Copy(f, r)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// hardLink makes dst a hard link to the entry's target, which must be
// inside root and reached without symlinks.
func hardLink(h *tar.Header, root, dst string) error {
	target, err := confined(h.Linkname)
	if err != nil || target == "" {
		return fmt.Errorf("unpack %s: hard link to %q outside the image", h.Name, h.Linkname)
	}
	if err := noSymlinkParents(root, target); err != nil {
		return err
	}
	_ = os.Remove(dst)
	if err := os.Link(filepath.Join(root, target), dst); err != nil {
		return fmt.Errorf("unpack %s: %w", h.Name, err)
	}
	return nil
}

// fileMode is a tar header's mode: permissions, setuid, setgid, sticky.
func fileMode(m int64) os.FileMode {
	mode := os.FileMode(m & 0o777)
	if m&0o4000 != 0 {
		mode |= os.ModeSetuid
	}
	if m&0o2000 != 0 {
		mode |= os.ModeSetgid
	}
	if m&0o1000 != 0 {
		mode |= os.ModeSticky
	}
	return mode
}

// confined is name as a clean relative path, or an error when it would
// leave the root.
func confined(name string) (string, error) {
	clean := path.Clean("/" + strings.TrimPrefix(name, "./"))
	for _, part := range strings.Split(name, "/") {
		if part == ".." {
			return "", fmt.Errorf("unpack: entry %q leaves the image's root", name)
		}
	}
	return strings.TrimPrefix(clean, "/"), nil
}

// noSymlinkParents refuses a path whose parent directories (inside root)
// include a symlink, which would let an entry land outside root; missing
// parents are created.
func noSymlinkParents(root, rel string) error {
	dir := root
	parts := strings.Split(rel, "/")
	for _, part := range parts[:len(parts)-1] {
		dir = filepath.Join(dir, part)
		fi, err := os.Lstat(dir)
		if errors.Is(err, os.ErrNotExist) { // a tar need not list every parent
			if err := os.Mkdir(dir, 0o755); err != nil {
				return fmt.Errorf("unpack %s: parent %s: %w", rel, part, err)
			}
			continue
		}
		if err != nil {
			return fmt.Errorf("unpack %s: parent %s: %w", rel, part, err)
		}
		if fi.Mode()&os.ModeSymlink != 0 {
			return fmt.Errorf("unpack %s: parent %s is a symlink", rel, part)
		}
	}
	return nil
}

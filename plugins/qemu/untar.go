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
	type dirTime struct {
		path string
		t    time.Time
	}
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
		dst := filepath.Join(root, rel)
		if err := noSymlinkParents(root, rel); err != nil {
			return err
		}
		mode := os.FileMode(h.Mode & 0o777)
		if h.Mode&0o4000 != 0 {
			mode |= os.ModeSetuid
		}
		if h.Mode&0o2000 != 0 {
			mode |= os.ModeSetgid
		}
		if h.Mode&0o1000 != 0 {
			mode |= os.ModeSticky
		}
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.Mkdir(dst, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
				return fmt.Errorf("unpack %s: %w", h.Name, err)
			}
			dirs = append(dirs, dirTime{dst, h.ModTime})
		case tar.TypeReg:
			_ = os.Remove(dst)
			f, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
			if err != nil {
				return fmt.Errorf("unpack %s: %w", h.Name, err)
			}
			_, err = io.Copy(f, tr)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return fmt.Errorf("unpack %s: %w", h.Name, err)
			}
		case tar.TypeSymlink:
			_ = os.Remove(dst)
			if err := os.Symlink(h.Linkname, dst); err != nil {
				return fmt.Errorf("unpack %s: %w", h.Name, err)
			}
		case tar.TypeLink:
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
			continue // shares the target's inode: owner and mode are the target's
		default:
			continue // devices, FIFOs: not needed in a root filesystem the guest mounts /dev over
		}
		if err := os.Lchown(dst, h.Uid, h.Gid); err != nil && !errors.Is(err, os.ErrPermission) {
			return fmt.Errorf("unpack %s: chown: %w", h.Name, err)
		}
		if h.Typeflag != tar.TypeSymlink {
			if err := os.Chmod(dst, mode); err != nil {
				return fmt.Errorf("unpack %s: chmod: %w", h.Name, err)
			}
			_ = os.Chtimes(dst, h.ModTime, h.ModTime)
		}
	}
	for i := len(dirs) - 1; i >= 0; i-- { // children first changed their parents' times
		_ = os.Chtimes(dirs[i].path, dirs[i].t, dirs[i].t)
	}
	return nil
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

package volumetar

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"
)

// errOutside marks a path that goes through a symlink leading outside the
// root; Extract and Archive turn it into their own refusal.
var errOutside = errors.New("goes through a symlink that leads outside the root")

// maxDeferredBytes bounds the names of directories whose mode is applied at
// the end of Extract.
const maxDeferredBytes = 16 << 20

// Extract extracts the tar stream r into the directory root, which must
// exist. See the package documentation for what it refuses. Regular files
// keep their permission bits (setuid and setgid are dropped, the sticky bit
// kept) and modification time; directories keep their permission bits, but
// not their times, which their children change; ownership is not applied.
// Whatever is at an entry's name is replaced (a directory with its
// contents), except a directory by a directory.
//
// Cancelling ctx stops Extract at its next read, with an error wrapping
// ctx.Err(); a source that blocks in Read must be closed by the caller to be
// interrupted. On error the root holds whatever was extracted so far.
func Extract(ctx context.Context, root string, r io.Reader) error {
	dir, err := os.OpenRoot(root)
	if err != nil {
		return fmt.Errorf("open extraction root: %w", err)
	}
	defer dir.Close()
	x := &extractor{ctx: ctx, root: dir, s: newStream(ctxReader{ctx, r}, false)}
	err = x.run()
	if ferr := x.finish(); err == nil {
		err = ferr
	}
	return err
}

type extractor struct {
	ctx     context.Context
	root    *os.Root
	s       *stream
	lastDir string // parent directory checked for the last entry

	// deferred directories need the owner's rwx until their children are
	// written; their mode is applied at the end, in reverse order.
	deferred      []deferredDir
	deferredBytes int
}

type deferredDir struct {
	name string
	perm fs.FileMode
}

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

func (x *extractor) run() error {
	for {
		if err := x.ctx.Err(); err != nil {
			return err
		}
		hdr, name, err := x.s.next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if err := x.entry(hdr, name); err != nil {
			return err
		}
	}
}

// entry writes one validated entry.
func (x *extractor) entry(hdr *tar.Header, name string) error {
	if hdr.Typeflag == tar.TypeXGlobalHeader || name == "." {
		return nil // nothing to write; the root's own mode stays the caller's
	}
	if name == x.lastDir || strings.HasPrefix(x.lastDir, name+"/") {
		x.lastDir = "" // this entry replaces a checked parent
	}
	if err := x.parents(hdr.Name, name, true); err != nil {
		return err
	}
	var err error
	switch hdr.Typeflag {
	case tar.TypeDir:
		err = x.dir(name, perm(hdr.Mode))
	case tar.TypeReg:
		err = x.file(hdr, name)
	case tar.TypeSymlink:
		if err = x.clear(name); err == nil {
			err = x.root.Symlink(hdr.Linkname, name)
		}
	case tar.TypeLink:
		err = x.hardlink(hdr, name)
	}
	if err != nil && !errors.Is(err, ErrUnsafeEntry) && !errors.Is(err, ErrTruncated) {
		err = fmt.Errorf("extract %s: %w", quote(hdr.Name), err)
	}
	return err
}

// parents makes sure every directory above name is a directory inside the
// root (creating missing ones if create is set), caching the last one
// checked since archives list a directory's entries together.
func (x *extractor) parents(entry, name string, create bool) error {
	dir := path.Dir(name)
	if dir == "." || (create && dir == x.lastDir) {
		return nil
	}
	err := walkParents(x.root, dir, create)
	if errors.Is(err, errOutside) {
		return fmt.Errorf("%w %s: %w", ErrUnsafeEntry, quote(entry), err)
	}
	if err == nil && create {
		x.lastDir = dir
	}
	return err
}

// walkParents checks each component of dir, a cleaned relative path, in
// turn. A symlink is allowed if it resolves to a directory inside the root
// (os.Root resolves it, and refuses one that leaves the root).
func walkParents(root *os.Root, dir string, create bool) error {
	for i := 0; i <= len(dir); i++ {
		if i < len(dir) && dir[i] != '/' {
			continue
		}
		p := dir[:i]
		fi, err := root.Lstat(p)
		switch {
		case errors.Is(err, fs.ErrNotExist) && create:
			if err := root.Mkdir(p, 0o755); err != nil {
				return fmt.Errorf("create parent directory: %w", err)
			}
		case err != nil:
			return fmt.Errorf("parent %q: %w", p, err)
		case fi.Mode()&fs.ModeSymlink != 0:
			st, err := root.Stat(p)
			if errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("parent %q is a dangling symlink: %w", p, err)
			}
			if err != nil {
				return fmt.Errorf("%w: %q (%w)", errOutside, p, err)
			}
			if !st.IsDir() {
				return fmt.Errorf("parent %q is a symlink to a non-directory", p)
			}
		case !fi.IsDir():
			return fmt.Errorf("parent %q is not a directory", p)
		}
	}
	return nil
}

// clear removes whatever is at name, without following a symlink there,
// so that the entry is created afresh rather than written through it.
func (x *extractor) clear(name string) error {
	fi, err := x.root.Lstat(name)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return err
	case fi.IsDir():
		return x.root.RemoveAll(name)
	}
	return x.root.Remove(name)
}

// dir creates or keeps directory name. The owner keeps rwx until the end so
// that a read-only directory's children can still be written.
func (x *extractor) dir(name string, mode fs.FileMode) error {
	fi, err := x.root.Lstat(name)
	if err != nil || !fi.IsDir() {
		if err := x.clear(name); err != nil {
			return err
		}
		if err := x.root.Mkdir(name, 0o700); err != nil {
			return err
		}
	}
	if mode&0o700 == 0o700 || x.deferredBytes+len(name) > maxDeferredBytes {
		return x.root.Chmod(name, mode)
	}
	x.deferred = append(x.deferred, deferredDir{name, mode})
	x.deferredBytes += len(name)
	return x.root.Chmod(name, mode|0o700)
}

// file writes a regular file. O_EXCL after clear means a symlink put at
// name in the meantime is never followed.
func (x *extractor) file(hdr *tar.Header, name string) error {
	if err := x.clear(name); err != nil {
		return err
	}
	f, err := x.root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, x.s.tr); err != nil {
		_ = f.Close()
		return dataErr(hdr.Name, err)
	}
	if err := f.Chmod(perm(hdr.Mode)); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	atime := hdr.AccessTime
	if atime.IsZero() {
		atime = hdr.ModTime
	}
	return x.root.Chtimes(name, atime, hdr.ModTime)
}

// hardlink links name to an earlier entry. os.Root links a symlink target
// itself, never what it points to.
func (x *extractor) hardlink(hdr *tar.Header, name string) error {
	target := path.Clean(hdr.Linkname)
	if err := x.parents(hdr.Name, target, false); err != nil {
		return err
	}
	if err := x.clear(name); err != nil {
		return err
	}
	return x.root.Link(target, name)
}

// finish applies the deferred directory modes, deepest last-made first.
func (x *extractor) finish() error {
	var first error
	for i := len(x.deferred) - 1; i >= 0; i-- {
		d := x.deferred[i]
		fi, err := x.root.Lstat(d.name)
		if err != nil || !fi.IsDir() {
			continue // replaced by a later entry
		}
		if err := x.root.Chmod(d.name, d.perm); err != nil && first == nil {
			first = fmt.Errorf("set mode of directory %q: %w", d.name, err)
		}
	}
	return first
}

// perm keeps the permission and sticky bits of a tar mode. setuid and
// setgid are dropped: a pipeline's archive must not make set-id programs on
// a host.
func perm(mode int64) fs.FileMode {
	m := fs.FileMode(mode & 0o777)
	if mode&0o1000 != 0 {
		m |= fs.ModeSticky
	}
	return m
}

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
	"slices"
	"strings"
	"time"
)

// ErrUnsafePath is wrapped when a path given to Archive is absolute, climbs
// out of the root with "..", or goes through a symlink that leads outside
// it.
var ErrUnsafePath = errors.New("unsafe volume path")

// Archive writes to w a tar of the directory root: its whole contents if no
// paths are given, otherwise each path (relative to root; a directory with
// everything under it) in turn. Entry names are relative to root
// ("a.txt", "sub/", "sub/b.txt"), and the root itself has no entry.
//
// Symlinks are archived as symlinks and never followed; a symlink in the
// middle of a path is followed only while it stays inside the root (os.Root
// refuses the rest). Hard links are archived as separate files, and sockets,
// fifos and devices are left out, since Extract refuses them.
//
// Every path is checked before anything is written: one that escapes the
// root is an error wrapping ErrUnsafePath, one that does not exist an error
// wrapping fs.ErrNotExist (as in pocketci's native driver). Files are
// streamed, never held in memory; a file that shrinks while it is archived
// is an error, one that grows is cut at the size it had.
func Archive(ctx context.Context, w io.Writer, root string, paths ...string) error {
	s, err := openSelection(root, paths)
	if err != nil {
		return err
	}
	defer s.close()
	return s.write(ctx, w)
}

// selection is a root and the checked paths in it to archive.
type selection struct {
	root  *os.Root
	names []string
}

// openSelection opens root and checks paths (see Archive).
func openSelection(root string, paths []string) (*selection, error) {
	dir, err := os.OpenRoot(root)
	if err != nil {
		return nil, fmt.Errorf("open archive root: %w", err)
	}
	names, err := selectPaths(dir, paths)
	if err != nil {
		_ = dir.Close()
		return nil, err
	}
	return &selection{root: dir, names: names}, nil
}

func (s *selection) close() { _ = s.root.Close() }

// write writes the selection's archive to w.
func (s *selection) write(ctx context.Context, w io.Writer) error {
	a := &archiver{ctx: ctx, root: s.root, tw: tar.NewWriter(w)}
	for _, name := range s.names {
		if err := a.add(name); err != nil {
			return err
		}
	}
	if err := a.tw.Close(); err != nil {
		return fmt.Errorf("finish archive: %w", err)
	}
	return nil
}

// CleanPath cleans a path relative to a volume's root, refusing, with an
// error wrapping ErrUnsafePath, one that is empty, holds a NUL, is absolute
// or climbs out with "..". It says nothing of symlinks: a driver that cannot
// open the root with os.Root checks those where the files are.
func CleanPath(p string) (string, error) {
	name := path.Clean(p)
	switch {
	case p == "" || strings.IndexByte(p, 0) >= 0:
		return "", fmt.Errorf("%w %q: empty or NUL", ErrUnsafePath, p)
	case strings.HasPrefix(p, "/"):
		return "", fmt.Errorf("%w %q: absolute", ErrUnsafePath, p)
	case name == ".." || strings.HasPrefix(name, "../"):
		return "", fmt.Errorf("%w %q: climbs out of the root", ErrUnsafePath, p)
	}
	return name, nil
}

// selectPaths cleans and checks the requested paths ("." for the whole root
// when there are none).
func selectPaths(root *os.Root, paths []string) ([]string, error) {
	if len(paths) == 0 {
		return []string{"."}, nil
	}
	names := make([]string, 0, len(paths))
	for _, p := range paths {
		name, err := CleanPath(p)
		if err != nil {
			return nil, err
		}
		if dir := path.Dir(name); dir != "." {
			err := walkParents(root, dir, false)
			if errors.Is(err, errOutside) {
				return nil, fmt.Errorf("%w %q: %w", ErrUnsafePath, p, err)
			}
			if err != nil {
				return nil, fmt.Errorf("volume path %q: %w", p, err)
			}
		}
		if _, err := root.Lstat(name); err != nil {
			return nil, fmt.Errorf("volume path %q: %w", p, err)
		}
		names = append(names, name)
	}
	return names, nil
}

type archiver struct {
	ctx  context.Context
	root *os.Root
	tw   *tar.Writer
}

// add archives name and, for a directory, everything under it.
func (a *archiver) add(name string) error {
	if name == "." {
		return a.children(".")
	}
	fi, err := a.root.Lstat(name)
	if err != nil {
		return fmt.Errorf("archive %q: %w", name, err)
	}
	return a.entry(name, fi)
}

func (a *archiver) entry(name string, fi fs.FileInfo) error {
	if err := a.ctx.Err(); err != nil {
		return err
	}
	switch mode := fi.Mode(); {
	case mode.IsRegular():
		return a.file(name, fi)
	case mode.IsDir():
		if err := a.header(name+"/", fi, ""); err != nil {
			return err
		}
		return a.children(name)
	case mode&fs.ModeSymlink != 0:
		target, err := a.root.Readlink(name)
		if err != nil {
			return fmt.Errorf("archive %q: %w", name, err)
		}
		return a.header(name, fi, target)
	}
	return nil // socket, fifo or device: see Archive
}

// children archives a directory's entries in name order, so archives of
// the same tree are the same.
func (a *archiver) children(name string) error {
	f, err := a.root.Open(name)
	if err != nil {
		return fmt.Errorf("archive %q: %w", name, err)
	}
	entries, err := f.ReadDir(-1)
	_ = f.Close()
	if err != nil {
		return fmt.Errorf("archive %q: %w", name, err)
	}
	slices.SortFunc(entries, func(x, y fs.DirEntry) int { return strings.Compare(x.Name(), y.Name()) })
	for _, e := range entries {
		child := path.Join(name, e.Name())
		fi, err := e.Info() // lstat: a symlink stays a symlink
		if errors.Is(err, fs.ErrNotExist) {
			continue // removed since the directory was read
		}
		if err != nil {
			return fmt.Errorf("archive %q: %w", child, err)
		}
		if err := a.entry(child, fi); err != nil {
			return err
		}
	}
	return nil
}

// file streams a regular file, checking that the file opened is the one
// examined, so a swap for a symlink or another file between the two is an
// error rather than a wrong entry.
func (a *archiver) file(name string, fi fs.FileInfo) error {
	f, err := a.root.Open(name)
	if err != nil {
		return fmt.Errorf("archive %q: %w", name, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("archive %q: %w", name, err)
	}
	if !os.SameFile(fi, st) || !st.Mode().IsRegular() {
		return fmt.Errorf("archive %q: changed while it was archived", name)
	}
	if err := a.header(name, st, ""); err != nil {
		return err
	}
	n, err := io.CopyN(a.tw, ctxReader{a.ctx, f}, st.Size())
	if errors.Is(err, io.EOF) {
		return fmt.Errorf("archive %q: shrank from %d to %d bytes while it was archived", name, st.Size(), n)
	}
	if err != nil {
		return fmt.Errorf("archive %q: %w", name, err)
	}
	return nil
}

func (a *archiver) header(name string, fi fs.FileInfo, link string) error {
	hdr, err := tar.FileInfoHeader(fi, link)
	if err != nil {
		return fmt.Errorf("archive %q: %w", name, err)
	}
	hdr.Name = name
	hdr.AccessTime, hdr.ChangeTime = time.Time{}, time.Time{}
	if err := a.tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("archive %q: %w", name, err)
	}
	return nil
}

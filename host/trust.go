package host

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// The host runs a plugin only from a file it can trust, checked as sudo and
// OpenSSH check theirs: the file the path resolves to (symlinks followed),
// and every directory from it up to /, must be owned by root or by the
// host's user and not writable by group or others. A directory writable by
// others is accepted only with the sticky bit (like /tmp), where nobody can
// replace an entry they do not own. The file is opened once; the checks and
// the SHA256SUMS pin apply to that open file, and a pinned plugin runs that
// same file (/proc/self/fd/3), so nothing can be swapped in between.

// trustedOwner reports whether uid may own a plugin file or directory.
func trustedOwner(uid uint32) bool {
	return uid == 0 || int(uid) == os.Geteuid()
}

// checkOwner checks the owner and mode of a plugin file or directory.
func checkOwner(what, path string, info fs.FileInfo) error {
	st, ok := info.Sys().(*syscall.Stat_t)
	if !ok {
		return fmt.Errorf("%s %s: cannot read its owner", what, path)
	}
	if !trustedOwner(st.Uid) {
		return fmt.Errorf("%s %s is owned by uid %d, neither root nor this host's user (uid %d): refusing it", what, path, st.Uid, os.Geteuid())
	}
	perm := info.Mode().Perm()
	if perm&0o022 != 0 && !(info.IsDir() && info.Mode()&fs.ModeSticky != 0 && what != "plugin directory") {
		return fmt.Errorf("%s %s is writable by group or others (mode %s): refusing it", what, path, perm)
	}
	return nil
}

// checkDirs checks dir and every directory above it up to /.
func checkDirs(dir string) error {
	what := "plugin directory"
	for {
		info, err := os.Lstat(dir)
		if err != nil {
			return fmt.Errorf("plugin directory: %w", err)
		}
		if err := checkOwner(what, dir, info); err != nil {
			return err
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return nil
		}
		dir, what = parent, "directory above the plugin"
	}
}

// resolve follows path's symlinks and checks the file it reaches, and every
// directory on the way to it, for trust. It returns the resolved path.
func resolve(path string) (string, error) {
	resolved, err := filepath.EvalSymlinks(path)
	if err != nil {
		return "", fmt.Errorf("plugin %s: %w", path, err)
	}
	if err := checkDirs(filepath.Dir(resolved)); err != nil {
		if resolved != path {
			return "", fmt.Errorf("plugin %s (a link to %s): %w", path, resolved, err)
		}
		return "", err
	}
	return resolved, nil
}

// openTrusted opens the file path resolves to, after checking it and every
// directory above it, and checks the open file itself: owner, mode and, when
// sum is set, its SHA-256. The caller runs this open file.
func openTrusted(path, sum string) (*os.File, error) {
	resolved, err := resolve(path)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(resolved)
	if err != nil {
		return nil, fmt.Errorf("plugin %s: %w", path, err)
	}
	info, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("plugin %s: %w", path, err)
	}
	if !info.Mode().IsRegular() || info.Mode().Perm()&0o111 == 0 {
		f.Close()
		return nil, fmt.Errorf("plugin %s is not an executable file (mode %s)", path, info.Mode())
	}
	if err := checkOwner("plugin", resolved, info); err != nil {
		f.Close()
		return nil, err
	}
	if sum == "" {
		return f, nil
	}
	got, err := readerSHA256(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("plugin %s: %w", path, err)
	}
	if got != sum {
		f.Close()
		return nil, fmt.Errorf("plugin %s has SHA-256 %s but %s pins %s: refusing to run it", path, got, SumsFile, sum)
	}
	return f, nil
}

func readerSHA256(r io.Reader) (string, error) {
	h := sha256.New()
	if _, err := io.Copy(h, r); err != nil {
		return "", fmt.Errorf("hash: %w", err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

package main

import (
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/jtarchie/pocketci/plugins/qemu/guestproto"
)

// sandboxBase is where sandbox roots are mounted, one directory each.
const sandboxBase = "/run/pocketci-root/sb-"

// sandboxRoot returns the root of the sandbox s.Sandbox, mounting it on
// its first task; the working directory is made in it for every task.
// d.mountMu is held.
func (d *daemon) sandboxRoot(s *guestproto.Start) (*taskRoot, error) {
	if s.Sandbox == "" || strings.Trim(s.Sandbox, "abcdefghijklmnopqrstuvwxyz0123456789-") != "" {
		return nil, fmt.Errorf("bad sandbox name %q", s.Sandbox)
	}
	r := d.sandboxes[s.Sandbox]
	if r == nil {
		base := sandboxBase + s.Sandbox
		r = &taskRoot{base: base, merged: base + "/m"}
		if !isMountPoint(base) {
			var err error
			if r, err = mountRootAt(base, s); err != nil {
				return nil, err
			}
		} // else mounted by an earlier instance of this daemon: kept as it is
		if d.sandboxes == nil {
			d.sandboxes = make(map[string]*taskRoot)
		}
		d.sandboxes[s.Sandbox] = r
	}
	root, err := openRoot(r.merged)
	if err != nil {
		return nil, err
	}
	defer syscall.Close(root)
	if s.WorkDir != "" {
		fd, err := mkdirInRoot(root, s.WorkDir)
		if err != nil {
			return nil, fmt.Errorf("sandbox root: %s: %w", s.WorkDir, err)
		}
		_ = syscall.Close(fd)
	}
	return r, nil
}

// dropSandbox unmounts the sandbox's root here and removes its mount point.
// Tasks that still hold a copy of it (forked while it was mounted) keep
// theirs until they end.
func (d *daemon) dropSandbox(name string) {
	d.mountMu.Lock()
	defer d.mountMu.Unlock()
	r := d.sandboxes[name]
	if r == nil {
		return
	}
	delete(d.sandboxes, name)
	r.detach()
	if err := os.Remove(r.base); err != nil && !errors.Is(err, os.ErrNotExist) {
		log.Printf("sandbox %s: remove %s: %v", name, r.base, err)
	}
}

// isMountPoint reports whether something is mounted on dir (its device
// differs from its parent's).
func isMountPoint(dir string) bool {
	var st, parent syscall.Stat_t
	if syscall.Stat(dir, &st) != nil || syscall.Stat(filepath.Dir(dir), &parent) != nil {
		return false
	}
	return st.Dev != parent.Dev
}

//go:build linux

package native

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	"github.com/jtarchie/pocketci/orchestra"
	"github.com/jtarchie/pocketci/plugins/native/internal/shim"
)

// native's working directory (<task>/work) stands for the container's
// root, and also for its default working directory: a mount at "/test" and
// one at "test" are both work/test, and so is WorkDir "/test" or "test".

// rootRel is p (a mount path or a WorkDir) relative to the working
// directory that stands for the root: "/a/b" and "a/b" are "a/b", "/" is "".
func rootRel(p string) string {
	return strings.TrimPrefix(orchestra.MountPath("/", p), "/")
}

// placed is one mount of a task with its volume's directory.
type placed struct {
	index int    // in Task.Mounts
	rel   string // see rootRel
	vol   string // the volume's directory
}

// inside reports whether rel is p or below it.
func inside(rel, p string) bool {
	return rel == p || strings.HasPrefix(rel, p+"/")
}

// layout is where a task's mounts are. A mount inside no other one is a
// symlink in the working directory to its volume. A mount inside another
// one (a cache in an input) is a bind mount that the shim makes in the
// task's own mount namespace, on an empty directory made in the enclosing
// volume; so no file of one volume is ever written into another.
type layout struct {
	work   string
	mounts []placed // by depth, shallowest first
}

// holder returns the deepest mount that holds rel, other than skip (an
// index into l.mounts; -1 for none), or nil.
func (l *layout) holder(rel string, skip int) *placed {
	var best *placed
	for i := range l.mounts {
		m := &l.mounts[i]
		if i != skip && inside(rel, m.rel) && (best == nil || len(m.rel) > len(best.rel)) {
			best = m
		}
	}
	return best
}

// hostDir is the directory rel is on this host outside the task's mount
// namespace: in the volume of the deepest mount that holds it, else in the
// working directory.
func (l *layout) hostDir(rel string, skip int) string {
	if m := l.holder(rel, skip); m != nil {
		return filepath.Join(m.vol, strings.TrimPrefix(strings.TrimPrefix(rel, m.rel), "/"))
	}
	return filepath.Join(l.work, rel)
}

// mountLocked creates the task's volumes and places them in work. It
// returns the binds the shim makes, shallowest first. d.mu is held.
func (d *Driver) mountLocked(task orchestra.Task, work string) (*layout, []shim.Bind, error) {
	l := &layout{work: work}
	for i, m := range task.Mounts {
		v, err := d.volumeLocked(m.Name)
		if err != nil {
			return nil, nil, fmt.Errorf("native: task %q: Mounts[%d]: %w", task.ID, i, err)
		}
		l.mounts = append(l.mounts, placed{index: i, rel: rootRel(m.Path), vol: v.dir})
	}
	sort.SliceStable(l.mounts, func(i, j int) bool {
		return strings.Count(l.mounts[i].rel, "/") < strings.Count(l.mounts[j].rel, "/")
	})
	var binds []shim.Bind
	for i, p := range l.mounts {
		m := task.Mounts[p.index]
		target := filepath.Join(work, p.rel)
		if l.holder(p.rel, i) == nil {
			if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
				return nil, nil, fmt.Errorf("native: task %q: Mounts[%d] at %q: %w", task.ID, p.index, m.Path, err)
			}
			if err := os.Symlink(p.vol, target); err != nil {
				return nil, nil, fmt.Errorf("native: task %q: Mounts[%d]: link volume %q at %q: %w", task.ID, p.index, m.Name, m.Path, err)
			}
			continue
		}
		// The mount point: an empty directory in the enclosing volume.
		if err := os.MkdirAll(l.hostDir(p.rel, i), 0o755); err != nil {
			return nil, nil, fmt.Errorf("native: task %q: Mounts[%d]: mount point %q in the enclosing volume: %w", task.ID, p.index, m.Path, err)
		}
		binds = append(binds, shim.Bind{Source: p.vol, Target: target})
	}
	return l, binds, nil
}

// workDir creates the task's working directory when it is missing and
// returns it as the task sees it (through the links and binds) and as it
// is on this host, and whether it is in a volume.
func (l *layout) workDir(task orchestra.Task) (logical, host string, inVolume bool, err error) {
	rel := rootRel(task.WorkDir)
	logical, host = filepath.Join(l.work, rel), l.hostDir(rel, -1)
	if err := os.MkdirAll(host, 0o755); err != nil {
		return "", "", false, fmt.Errorf("native: task %q: WorkDir %q: %w", task.ID, task.WorkDir, err)
	}
	return logical, host, l.holder(rel, -1) != nil, nil
}

// namespaceAttr is how the shim of a task with binds starts: in a mount
// namespace of its own, and, when the driver is not root, in a user
// namespace that maps the driver's user to itself, so that it may mount
// (the task keeps its uid; only its shim has CAP_SYS_ADMIN there, and only
// until it made the binds).
func namespaceAttr(attr *syscall.SysProcAttr, binds []shim.Bind) {
	if len(binds) == 0 {
		return
	}
	if os.Geteuid() == 0 {
		attr.Unshareflags = syscall.CLONE_NEWNS
		return
	}
	attr.Cloneflags = syscall.CLONE_NEWUSER | syscall.CLONE_NEWNS
	attr.UidMappings = []syscall.SysProcIDMap{{ContainerID: os.Geteuid(), HostID: os.Geteuid(), Size: 1}}
	attr.GidMappings = []syscall.SysProcIDMap{{ContainerID: os.Getegid(), HostID: os.Getegid(), Size: 1}}
	attr.GidMappingsEnableSetgroups = false
	// Without it the shim, not root in its namespace, would lose at exec
	// the capabilities it has there; it drops them before the command.
	attr.AmbientCaps = []uintptr{capSysAdmin}
}

// capSysAdmin is CAP_SYS_ADMIN from <linux/capability.h>.
const capSysAdmin = 21

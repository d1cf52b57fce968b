//go:build linux

package native

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"

	"github.com/jtarchie/pocketci/orchestra"
	"github.com/jtarchie/pocketci/plugins/native/internal/shim"
)

// RunContainer starts task as a local process tree and returns at once. The
// same task ID returns the existing container without running the command
// again, also when another driver instance of the namespace (in this
// process or another) runs it.
func (d *Driver) RunContainer(ctx context.Context, task orchestra.Task) (orchestra.Container, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("native: run task %q: %w", task.ID, err)
	}
	// The contract's own rules, with the contract's own error text: the
	// host checks the same function before a task crosses the wire.
	if err := orchestra.ValidateTask(task); err != nil {
		return nil, err
	}
	if err := validateMounts(task); err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, fmt.Errorf("native: run task %q: %w", task.ID, orchestra.ErrClosed)
	}
	if c, ok := d.containers[task.ID]; ok {
		return c, nil
	}
	c, err := d.openLocked(task.ID, &task)
	if err != nil {
		return nil, err
	}
	d.containers[task.ID] = c
	return c, nil
}

// validateMounts refuses two mounts at the same place: "/a" and "a" are
// both work/a, since native's working directory stands for the root. A
// mount inside another one is fine (see layout).
func validateMounts(task orchestra.Task) error {
	for i, a := range task.Mounts {
		for j := i + 1; j < len(task.Mounts); j++ {
			if b := task.Mounts[j]; rootRel(a.Path) == rootRel(b.Path) {
				return fmt.Errorf("native: %w: task %q: Mounts[%d].Path %q and Mounts[%d].Path %q are the same place: native's working directory stands for the root",
					orchestra.ErrInvalidTask, task.ID, i, a.Path, j, b.Path)
			}
		}
	}
	return nil
}

// taskDir is the directory of task id.
func (d *Driver) taskDir(id string) string {
	return filepath.Join(d.dir, "tasks", orchestra.SafeName(orchestra.PathNameRule, id))
}

// openLocked returns the container of id: a finished one found on disk, one
// that another driver instance runs (its lock is held), or, when task is not
// nil, a newly started one. Without task and without a trace on disk it
// returns an error wrapping ErrContainerNotFound. d.mu is held.
func (d *Driver) openLocked(id string, task *orchestra.Task) (*Container, error) {
	dir := d.taskDir(id)
	if task == nil {
		if _, err := os.Stat(filepath.Join(dir, lockFile)); err != nil {
			return nil, fmt.Errorf("native: task %q in namespace %q: %w", id, d.namespace, orchestra.ErrContainerNotFound)
		}
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("native: task %q: create directory: %w", id, err)
	}
	lock, err := lockTask(dir, task != nil)
	if task == nil && errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("native: task %q in namespace %q: %w", id, d.namespace, orchestra.ErrContainerNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("native: task %q: %w", id, err)
	}
	if lock == nil {
		// Done already when its exit file is there: only its shim, which
		// holds the lock too, is still exiting.
		if c, ok := d.recover(id, dir); ok {
			return c, nil
		}
		d.logger.Debug("task runs in another driver instance; attached", "task", id)
		return d.attach(id, dir), nil
	}
	if c, ok := d.recover(id, dir); ok {
		_ = lock.Close()
		return c, nil
	}
	if task == nil {
		// Its driver died while it ran (and its shim killed its tree with
		// it): remove what is left, so nothing of it outlives this look.
		if err := removeTaskDir(dir); err != nil {
			d.logger.Warn("remove the directory of a task whose driver died", "task", id, "err", err)
		}
		_ = lock.Close()
		return nil, fmt.Errorf("native: task %q in namespace %q did not finish (its driver died): %w", id, d.namespace, orchestra.ErrContainerNotFound)
	}
	c, err := d.start(*task, dir, lock)
	if err != nil {
		// Nothing of the task runs: leave no directory that would look
		// like a task whose driver died.
		if rerr := removeTaskDir(dir); rerr != nil {
			d.logger.Warn("remove the directory of a task that did not start", "task", id, "err", rerr)
		}
		_ = lock.Close()
		return nil, err
	}
	return c, nil
}

// start clears what an earlier, unfinished run of the ID left, prepares the
// task's directory and starts its shim. The caller holds the task lock,
// which the shim keeps. d.mu is held.
func (d *Driver) start(task orchestra.Task, dir string, lock *os.File) (*Container, error) {
	spec, binds, err := d.prepare(task, dir)
	if err != nil {
		return nil, err
	}
	files, err := openShimFiles(dir, task.Stdin != nil)
	if err != nil {
		return nil, fmt.Errorf("native: task %q: %w", task.ID, err)
	}
	defer files.closeChildEnds() // the shim has its copies
	cmd := shimCommand(spec, dir, files, lock)
	namespaceAttr(cmd.SysProcAttr, binds)
	if err := cmd.Start(); err != nil {
		files.closeParentEnds()
		if len(binds) > 0 {
			return nil, fmt.Errorf("native: task %q: Mounts: a mount inside another needs a mount namespace of the task's own (root, or unprivileged user namespaces): start the task's shim: %w", task.ID, err)
		}
		return nil, fmt.Errorf("native: task %q: start the task's shim: %w", task.ID, err)
	}
	c := newContainer(d, task.ID, dir)
	c.cmd, c.pid, c.lock, c.stdinW, c.killW = cmd, cmd.Process.Pid, lock, files.stdinW, files.killW
	d.logger.Debug("task started", "task", task.ID, "pid", c.pid, "command", task.Command, "dir", spec.Dir, "binds", len(binds))
	if files.stdinW != nil {
		// Not tied to RunContainer's ctx: stdin keeps flowing after it ends.
		go c.feedStdin(task.Stdin)
	}
	go c.reap(files.ctlR)
	return c, nil
}

// shimFiles are the files a task's shim starts with, and the ends of its
// pipes that stay here.
type shimFiles struct {
	stdout, stderr *os.File // the task's output files
	ctlR, ctlW     *os.File // the shim writes its exit report to ctlW
	// killR is the shim's; closing killW (kill, or this process dying
	// without Close) makes the shim take the task's whole tree down.
	killR, killW   *os.File
	stdinR, stdinW *os.File // nil for a task without stdin
}

// openShimFiles creates the task's output files in dir and the pipes.
func openShimFiles(dir string, stdin bool) (_ *shimFiles, err error) {
	f := &shimFiles{}
	defer func() {
		if err != nil {
			f.closeChildEnds()
			f.closeParentEnds()
		}
	}()
	for _, out := range []struct {
		name string
		file **os.File
	}{{"stdout", &f.stdout}, {"stderr", &f.stderr}} {
		if *out.file, err = os.OpenFile(filepath.Join(dir, out.name), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644); err != nil {
			return nil, fmt.Errorf("create %s file: %w", out.name, err)
		}
	}
	if f.ctlR, f.ctlW, err = os.Pipe(); err != nil {
		return nil, fmt.Errorf("control pipe: %w", err)
	}
	if f.killR, f.killW, err = os.Pipe(); err != nil {
		return nil, fmt.Errorf("kill pipe: %w", err)
	}
	if stdin {
		if f.stdinR, f.stdinW, err = os.Pipe(); err != nil {
			return nil, fmt.Errorf("stdin pipe: %w", err)
		}
	}
	return f, nil
}

// closeChildEnds closes this process's copies of what the shim was given.
func (f *shimFiles) closeChildEnds() { closeFiles(f.stdout, f.stderr, f.ctlW, f.killR, f.stdinR) }

// closeParentEnds closes the ends kept here, when no shim started.
func (f *shimFiles) closeParentEnds() { closeFiles(f.ctlR, f.killW, f.stdinW) }

// shimCommand is the shim process for spec: this binary again, in the
// task's work directory, with fds 3, 4 and 5 as shim.ControlFD, LockFD and
// KillFD.
func shimCommand(spec shim.Spec, dir string, f *shimFiles, lock *os.File) *exec.Cmd {
	argv, env := shim.Args(spec)
	cmd := &exec.Cmd{
		Path:        "/proc/self/exe",
		Args:        argv,
		Dir:         filepath.Join(dir, "work"),
		Env:         env,
		Stdout:      f.stdout,
		Stderr:      f.stderr,
		ExtraFiles:  []*os.File{f.ctlW, lock, f.killR},
		SysProcAttr: &syscall.SysProcAttr{Setpgid: true},
	}
	if f.stdinR != nil {
		cmd.Stdin = f.stdinR
	}
	return cmd
}

// prepare clears the task's directory, places its mounts, creates its
// working directory and returns what its shim does. d.mu is held.
func (d *Driver) prepare(task orchestra.Task, dir string) (shim.Spec, []shim.Bind, error) {
	for _, name := range []string{"work", "stdout", "stderr", exitFile, pidFile} {
		if err := os.RemoveAll(filepath.Join(dir, name)); err != nil {
			return shim.Spec{}, nil, fmt.Errorf("native: task %q: clear directory: %w", task.ID, err)
		}
	}
	work := filepath.Join(dir, "work")
	if err := os.MkdirAll(work, 0o755); err != nil {
		return shim.Spec{}, nil, fmt.Errorf("native: task %q: create working directory: %w", task.ID, err)
	}
	cred, err := credential(task.User)
	if err != nil {
		return shim.Spec{}, nil, fmt.Errorf("native: task %q: %w", task.ID, err)
	}
	l, binds, err := d.mountLocked(task, work)
	if err != nil {
		return shim.Spec{}, nil, err
	}
	wd, host, inVolume, err := l.workDir(task)
	if err != nil {
		return shim.Spec{}, nil, err
	}
	spec := shim.Spec{
		Path:  resolveCommand(task.Command[0], wd),
		Args:  task.Command,
		Env:   taskEnv(task.Env, wd),
		Dir:   wd,
		UID:   -1,
		GID:   -1,
		Binds: binds,
	}
	if cred != nil {
		spec.UID, spec.GID = int(cred.Uid), int(cred.Gid)
		dirs := []string{work}
		if !inVolume && host != work { // volumes are not chowned
			dirs = append(dirs, host)
		}
		for _, p := range dirs {
			if err := os.Chown(p, spec.UID, spec.GID); err != nil {
				return shim.Spec{}, nil, fmt.Errorf("native: task %q: chown working directory to User %q: %w", task.ID, task.User, err)
			}
		}
	}
	return spec, binds, nil
}

// resolveCommand finds the executable for name: relative paths with a slash
// are taken from the command's working directory dir, bare names from the
// host's PATH. A bare name that is not there is "" (the shim reports it as
// the task's failure: exit 127, "command not found" on its stderr).
func resolveCommand(name, dir string) string {
	if strings.Contains(name, "/") {
		if !filepath.IsAbs(name) {
			name = filepath.Join(dir, name)
		}
		return name
	}
	path, err := exec.LookPath(name)
	if err != nil {
		return ""
	}
	return path
}

// taskEnv is exactly env, plus a default PATH when env has none and PWD
// (the working directory as the task sees it, through its mounts: what a
// shell's pwd prints) when env has none.
func taskEnv(env map[string]string, dir string) []string {
	out := make([]string, 0, len(env)+2)
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	if _, ok := env["PATH"]; !ok {
		out = append(out, "PATH="+defaultPath)
	}
	if _, ok := env["PWD"]; !ok {
		out = append(out, "PWD="+dir)
	}
	sort.Strings(out)
	return out
}

// credential resolves task.User ("name", "uid", "name:group" or
// "uid:gid"). Empty means the driver's own user. Switching user needs root.
func credential(spec string) (*syscall.Credential, error) {
	if spec == "" {
		return nil, nil
	}
	name, group, hasGroup := strings.Cut(spec, ":")
	u, err := user.Lookup(name)
	if err != nil {
		if u, err = user.LookupId(name); err != nil {
			return nil, fmt.Errorf("%w: User %q: no such user", orchestra.ErrInvalidTask, spec)
		}
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("%w: User %q: uid %q is not numeric", orchestra.ErrInvalidTask, spec, u.Uid)
	}
	gidStr := u.Gid
	if hasGroup {
		if g, err := user.LookupGroup(group); err == nil {
			gidStr = g.Gid
		} else if _, err := strconv.ParseUint(group, 10, 32); err == nil {
			gidStr = group
		} else {
			return nil, fmt.Errorf("%w: User %q: no such group %q", orchestra.ErrInvalidTask, spec, group)
		}
	}
	gid, err := strconv.ParseUint(gidStr, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("%w: User %q: gid %q is not numeric", orchestra.ErrInvalidTask, spec, gidStr)
	}
	if int(uid) == os.Geteuid() && int(gid) == os.Getegid() {
		return nil, nil // already that user
	}
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("%w: User %q: running as another user needs the driver to run as root", orchestra.ErrInvalidTask, spec)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

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

// linkPath is where native links a mount inside the working directory:
// native's working directory stands for the container's root, so "/test"
// and "test" both become work/test (orchestra.MountPath with "/" as the
// working directory).
func linkPath(work, mountPath string) string {
	return filepath.Join(work, orchestra.MountPath("/", mountPath))
}

// validateMounts refuses what native cannot do: a mount inside another
// one, or two at the same place ("/a" and "a": both are work/a). Native links volumes into the working directory, so the inner link
// would have to be written into the outer volume.
func validateMounts(task orchestra.Task) error {
	for i, a := range task.Mounts {
		pa := orchestra.MountPath("/", a.Path)
		for j, b := range task.Mounts {
			pb := orchestra.MountPath("/", b.Path)
			if i < j && pa == pb {
				return fmt.Errorf("native: %w: task %q: Mounts[%d].Path %q and Mounts[%d].Path %q are the same place: native's working directory stands for the root",
					orchestra.ErrInvalidTask, task.ID, i, a.Path, j, b.Path)
			}
			if i != j && strings.HasPrefix(pa, pb+"/") {
				return fmt.Errorf("native: %w: task %q: Mounts[%d].Path %q is inside Mounts[%d].Path %q: native links volumes into the working directory, so a nested mount would write into volume %q",
					orchestra.ErrInvalidTask, task.ID, i, a.Path, j, b.Path, b.Name)
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
func (d *Driver) start(task orchestra.Task, dir string, lock *os.File) (_ *Container, err error) {
	for _, name := range []string{"work", "stdout", "stderr", exitFile, pidFile} {
		if err := os.RemoveAll(filepath.Join(dir, name)); err != nil {
			return nil, fmt.Errorf("native: task %q: clear directory: %w", task.ID, err)
		}
	}
	work := filepath.Join(dir, "work")
	if err := os.MkdirAll(work, 0o755); err != nil {
		return nil, fmt.Errorf("native: task %q: create working directory: %w", task.ID, err)
	}
	for _, m := range task.Mounts {
		v, err := d.volumeLocked(m.Name)
		if err != nil {
			return nil, fmt.Errorf("native: task %q: %w", task.ID, err)
		}
		link := linkPath(work, m.Path)
		if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
			return nil, fmt.Errorf("native: task %q: mount %q: %w", task.ID, m.Path, err)
		}
		if err := os.Symlink(v.dir, link); err != nil {
			return nil, fmt.Errorf("native: task %q: mount volume %q at %q: %w", task.ID, m.Name, m.Path, err)
		}
	}
	path, err := resolveCommand(task.Command[0], work)
	if err != nil {
		return nil, fmt.Errorf("native: task %q: %w", task.ID, err)
	}
	cred, err := credential(task.User)
	if err != nil {
		return nil, fmt.Errorf("native: task %q: %w", task.ID, err)
	}
	if cred != nil {
		if err := os.Chown(work, int(cred.Uid), int(cred.Gid)); err != nil {
			return nil, fmt.Errorf("native: task %q: chown working directory to %q: %w", task.ID, task.User, err)
		}
	}
	var files [2]*os.File
	for i, name := range []string{"stdout", "stderr"} {
		f, err := os.OpenFile(filepath.Join(dir, name), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
		if err != nil {
			return nil, fmt.Errorf("native: task %q: create %s file: %w", task.ID, name, err)
		}
		defer f.Close() // the shim has its copy
		files[i] = f
	}
	ctlR, ctlW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("native: task %q: control pipe: %w", task.ID, err)
	}
	defer ctlW.Close() // the shim has its copy
	killR, killW, err := os.Pipe()
	if err != nil {
		_ = ctlR.Close()
		return nil, fmt.Errorf("native: task %q: kill pipe: %w", task.ID, err)
	}
	defer killR.Close() // the shim has its copy
	argv, env := shim.Args(path, task.Command, taskEnv(task.Env))
	cmd := &exec.Cmd{
		Path:   "/proc/self/exe",
		Args:   argv,
		Dir:    work,
		Env:    env,
		Stdout: files[0],
		Stderr: files[1],
		// fds 3, 4 and 5: shim.ControlFD, shim.LockFD, shim.KillFD. The
		// write end of the kill pipe stays here: when it closes (kill, or
		// the driver's process dies without Close) the shim takes the
		// task's whole tree down.
		ExtraFiles: []*os.File{ctlW, lock, killR},
		SysProcAttr: &syscall.SysProcAttr{
			Setpgid:    true,
			Credential: cred,
		},
	}
	var stdinR, stdinW *os.File
	if task.Stdin != nil {
		if stdinR, stdinW, err = os.Pipe(); err != nil {
			_ = ctlR.Close()
			return nil, fmt.Errorf("native: task %q: stdin pipe: %w", task.ID, err)
		}
		cmd.Stdin = stdinR
	}
	if err := cmd.Start(); err != nil {
		_ = ctlR.Close()
		_ = killW.Close()
		if stdinR != nil {
			_ = stdinR.Close()
			_ = stdinW.Close()
		}
		return nil, fmt.Errorf("native: task %q: start %q: %w", task.ID, path, err)
	}
	if stdinR != nil {
		_ = stdinR.Close() // the shim's child has its copy
	}
	c := newContainer(d, task.ID, dir)
	c.cmd, c.pid, c.lock, c.stdinW, c.killW = cmd, cmd.Process.Pid, lock, stdinW, killW
	d.logger.Debug("task started", "task", task.ID, "pid", c.pid, "command", task.Command, "dir", work)
	if stdinW != nil {
		// Not tied to RunContainer's ctx: stdin keeps flowing after it ends.
		go c.feedStdin(task.Stdin)
	}
	go c.reap(ctlR)
	return c, nil
}

// resolveCommand finds the executable for name: relative paths with a slash
// are taken from the working directory, bare names from the host's PATH.
func resolveCommand(name, work string) (string, error) {
	if strings.Contains(name, "/") {
		if !filepath.IsAbs(name) {
			name = filepath.Join(work, name)
		}
		return name, nil
	}
	path, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("command %q not found on the host's PATH: %w", name, err)
	}
	return path, nil
}

// taskEnv is exactly env, plus a default PATH when env has none.
func taskEnv(env map[string]string) []string {
	out := make([]string, 0, len(env)+1)
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	if _, ok := env["PATH"]; !ok {
		out = append(out, "PATH="+defaultPath)
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

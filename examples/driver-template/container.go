package mydriver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jtarchie/pocketci/orchestra"
)

// pollInterval is how often Logs with follow looks for new output, and how
// often a container another instance started is looked at on disk.
const pollInterval = 20 * time.Millisecond

// killWait bounds how long Cleanup and Close wait for a killed task.
const killWait = 10 * time.Second

// Container is a task, running or done. Its directory
// <root>/<namespace>/tasks/<task> holds stdout, stderr, work/ (the default
// working directory) and the state files of state.go. It implements
// orchestra.Container.
type Container struct {
	driver *Driver
	id     string
	dir    string
	cmd    *exec.Cmd // nil when another instance started the task
	lock   *os.File  // held while the task runs, by the instance that started it

	done     chan struct{} // closed once the task exited
	doneOnce sync.Once
	exitCode int // valid once done is closed

	stdinOnce sync.Once
	stdinW    *os.File

	mu      sync.Mutex
	removed bool
}

var _ orchestra.Container = (*Container)(nil)

// initScript is the task's PID 1. Its arguments are pairs of a volume
// directory and its mount point, "--", the working directory, what OLDPWD
// is ("unset", or "=" and the task's value) and the command. It
// bind-mounts each volume (outer mounts first, so an inner mount point is
// made inside the outer volume), enters the working directory, gives OLDPWD
// back the task's value (cd set it), runs the command as its child and
// exits with its status. When a mount or the working directory cannot be
// set up, the task exits 125 (as docker run does) with the reason on its
// stderr. It sets no other variable: the command would
// inherit a change to an exported one. `command -p` finds mkdir and mount
// whatever the task's PATH is.
const initScript = `while [ "$1" != -- ]; do
	command -p mkdir -p "$2" && command -p mount --bind "$1" "$2" || exit 125
	shift 2
done
command -p mkdir -p "$2" && cd "$2" || exit 125
case $3 in
unset) unset OLDPWD ;;
*) OLDPWD=${3#=} ;;
esac
shift 3
"$@"
exit $?`

// status is a snapshot of a container's state.
type status struct {
	done     bool
	exitCode int
}

// IsDone reports whether the task finished.
func (s status) IsDone() bool { return s.done }

// ExitCode is the task's exit code, 128+N when it was killed by signal N.
func (s status) ExitCode() int { return s.exitCode }

// RunContainer starts task and returns at once. A task ID that already ran
// in this namespace, from any instance, returns the existing container
// without running again.
func (d *Driver) RunContainer(ctx context.Context, task orchestra.Task) (orchestra.Container, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("%s: run task %q: %w", Name, task.ID, err)
	}
	// orchestra.ValidateTask is the contract's own check; return its error
	// as it is, so that a task is refused with the same words in process
	// and through the plugin (the host runs the same check).
	if err := orchestra.ValidateTask(task); err != nil {
		return nil, err
	}
	if err := validateMounts(task); err != nil {
		return nil, fmt.Errorf("%s: task %q: %w", Name, task.ID, err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, fmt.Errorf("%s: run task %q: %w", Name, task.ID, orchestra.ErrClosed)
	}
	if c := d.findLocked(task.ID); c != nil {
		return c, nil
	}
	c, err := d.start(task)
	if err != nil {
		return nil, fmt.Errorf("%s: task %q: %w", Name, task.ID, err)
	}
	d.containers[task.ID] = c
	return c, nil
}

// validateMounts refuses what this driver cannot do on top of the
// contract: the working directory stands for the task's root, so a mount at
// "/a" and one at "a" are one place. (A mount inside another, "/a" and
// "/a/b", is fine.)
func validateMounts(task orchestra.Task) error {
	seen := map[string]int{}
	for i, m := range task.Mounts {
		p := mountPath(m.Path)
		if j, ok := seen[p]; ok {
			return fmt.Errorf("%w: Mounts[%d].Path %q is the same place as Mounts[%d].Path %q", orchestra.ErrInvalidTask, i, m.Path, j, task.Mounts[j].Path)
		}
		seen[p] = i
	}
	return nil
}

// mountPath is where a mount (or WorkDir) is, relative to the default
// working directory, which stands for the task's root: "/test" and "test"
// are both "test".
func mountPath(p string) string {
	return strings.TrimPrefix(orchestra.MountPath("/", p), "/")
}

// start creates the task's directory and starts its process. d.mu is held.
// The directory is made under a temporary name and renamed into place with
// its lock held, so another instance never sees a task half made, and of
// two instances starting one ID, one wins and the other finds its task.
func (d *Driver) start(task orchestra.Task) (*Container, error) {
	args, err := d.initArgs(task)
	if err != nil {
		return nil, err
	}
	tmp, lock, err := d.prepare(task)
	if err != nil {
		return nil, err
	}
	dir := d.taskDir(task.ID)
	if err := os.Rename(tmp, dir); err != nil {
		_ = os.RemoveAll(tmp)
		_ = lock.Close()
		if c := d.findLocked(task.ID); c != nil {
			return c, nil // another instance started it just now
		}
		return nil, fmt.Errorf("claim task directory: %w", err)
	}
	c := &Container{driver: d, id: task.ID, dir: dir, lock: lock, done: make(chan struct{})}
	if err := c.startProcess(task, args); err != nil {
		if rerr := c.removeDir(); rerr != nil {
			d.logger.Warn("remove the directory of a task that did not start", "task", task.ID, "err", rerr)
		}
		_ = lock.Close()
		return nil, err
	}
	return c, nil
}

// prepare makes the new task's directory under a temporary name: work/,
// empty stdout and stderr, and the lock file, locked. d.mu is held.
func (d *Driver) prepare(task orchestra.Task) (tmp string, lock *os.File, err error) {
	tmp, err = os.MkdirTemp(filepath.Join(d.dir, "tasks"), ".new-")
	if err != nil {
		return "", nil, fmt.Errorf("create task directory: %w", err)
	}
	defer func() {
		if err != nil {
			_ = os.RemoveAll(tmp)
		}
	}()
	// MkdirTemp makes 0700; tasks of another user must reach work/.
	if err := os.Chmod(tmp, 0o755); err != nil {
		return "", nil, fmt.Errorf("create task directory: %w", err)
	}
	work := filepath.Join(tmp, "work")
	if err := os.Mkdir(work, 0o755); err != nil {
		return "", nil, fmt.Errorf("create working directory: %w", err)
	}
	if task.User != "" {
		uid, gid, err := lookupUser(task.User)
		if err != nil {
			return "", nil, err
		}
		if err := os.Chown(work, uid, gid); err != nil {
			return "", nil, fmt.Errorf("chown working directory: %w", err)
		}
	}
	for _, name := range []string{"stdout", "stderr"} {
		if err := os.WriteFile(filepath.Join(tmp, name), nil, 0o644); err != nil {
			return "", nil, fmt.Errorf("create %s file: %w", name, err)
		}
	}
	lock, err = createLock(tmp)
	if err != nil {
		return "", nil, err
	}
	return tmp, lock, nil
}

// initArgs are unshare's arguments for task: the namespaces, then
// initScript with its mounts, working directory and command. Mounts are
// sorted by path, so an outer one ("repo") comes before an inner one
// ("repo/cache"). Volumes a task mounts are created implicitly; SizeGB is
// a hint this driver ignores (a directory has no size). d.mu is held.
func (d *Driver) initArgs(task orchestra.Task) ([]string, error) {
	work := filepath.Join(d.taskDir(task.ID), "work")
	mounts := append(orchestra.Mounts(nil), task.Mounts...)
	sort.Slice(mounts, func(i, j int) bool { return mountPath(mounts[i].Path) < mountPath(mounts[j].Path) })
	args := []string{"--mount-proc", "--ipc", "--uts", "--", "/bin/sh", "-c", initScript, "init"}
	for _, m := range mounts {
		v, err := d.volumeLocked(m.Name)
		if err != nil {
			return nil, err
		}
		args = append(args, v.dir, filepath.Join(work, mountPath(m.Path)))
	}
	// WorkDir is relative to the default working directory, or absolute,
	// where "/" is the default working directory, as for mounts.
	args = append(args, "--", filepath.Join(work, orchestra.WorkingDir("/", task)), "unset")
	if v, ok := task.Env["OLDPWD"]; ok {
		args[len(args)-1] = "=" + v
	}
	if task.User != "" {
		uid, gid, err := lookupUser(task.User)
		if err != nil {
			return nil, err
		}
		setpriv, err := exec.LookPath("setpriv")
		if err != nil {
			return nil, fmt.Errorf("User needs setpriv from util-linux: %w", err)
		}
		args = append(args, setpriv, "--reuid="+strconv.Itoa(uid), "--regid="+strconv.Itoa(gid), "--clear-groups", "--")
	}
	return append(args, task.Command...), nil
}

// startProcess starts the task's process in c.dir.
//
// Go puts the process into a new PID namespace; unshare adds mount, IPC and
// UTS namespaces, mounts a /proc that shows only the task's processes, and
// execs initScript as the namespace's init (PID 1), as root: it mounts the
// volumes, then runs the command as PID 2 (through setpriv when the task has
// a User). The command must not be PID 1 itself: the kernel drops signals a
// PID 1 has no handler for, so `kill -9 $$` would do nothing. When PID 1
// ends, the kernel kills everything else in the namespace, and the
// namespace's mounts go with it.
func (c *Container) startProcess(task orchestra.Task, args []string) error {
	d := c.driver
	cmd := exec.Command(d.unshare, args...)
	cmd.Dir = filepath.Join(c.dir, "work")
	cmd.Env = taskEnv(task.Env)
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: syscall.CLONE_NEWPID,
		// If the driver's process dies without Close, the task dies too,
		// and with PID 1 gone the kernel kills the rest of its namespace.
		Pdeathsig: syscall.SIGKILL,
	}
	// Output goes to files: Logs works after exit, from the start, any
	// number of times, from any instance.
	stdout, err := os.OpenFile(filepath.Join(c.dir, "stdout"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return fmt.Errorf("open stdout file: %w", err)
	}
	defer stdout.Close() // the child has its own copy
	stderr, err := os.OpenFile(filepath.Join(c.dir, "stderr"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return fmt.Errorf("open stderr file: %w", err)
	}
	defer stderr.Close()
	cmd.Stdout, cmd.Stderr = stdout, stderr
	var stdinR *os.File
	if task.Stdin != nil {
		if stdinR, c.stdinW, err = os.Pipe(); err != nil {
			return fmt.Errorf("stdin pipe: %w", err)
		}
		defer stdinR.Close() // the child has its own copy
		cmd.Stdin = stdinR
	}
	if err := closeOnExecAbove2(); err != nil {
		c.closeStdin()
		return err
	}
	if err := cmd.Start(); err != nil {
		c.closeStdin()
		return fmt.Errorf("start %v: %w", task.Command, err)
	}
	c.cmd = cmd
	if err := writePID(c.dir, cmd.Process.Pid); err != nil {
		d.logger.Warn("record the task's pid: another instance cannot kill it", "task", c.id, "err", err)
	}
	d.logger.Debug("task started", "task", task.ID, "pid", cmd.Process.Pid, "command", task.Command)
	if c.stdinW != nil {
		// Not tied to RunContainer's ctx: stdin keeps flowing after it ends.
		go c.feedStdin(task.Stdin)
	}
	go c.wait()
	return nil
}

// taskEnv is exactly env, plus a default PATH when env has none: nothing of
// the driver's own environment reaches the task.
func taskEnv(env map[string]string) []string {
	out := make([]string, 0, len(env)+1)
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	if _, ok := env["PATH"]; !ok {
		out = append(out, "PATH="+defaultPath)
	}
	return out
}

// lookupUser resolves "name", "uid", "name:group" or "uid:gid".
func lookupUser(spec string) (uid, gid int, err error) {
	name, group, hasGroup := strings.Cut(spec, ":")
	u, err := user.Lookup(name)
	if err != nil {
		if u, err = user.LookupId(name); err != nil {
			return 0, 0, fmt.Errorf("%w: User %q: no such user", orchestra.ErrInvalidTask, spec)
		}
	}
	gidStr := u.Gid
	if hasGroup {
		gidStr = group
		if g, err := user.LookupGroup(group); err == nil {
			gidStr = g.Gid
		}
	}
	uid, err1 := strconv.Atoi(u.Uid)
	gid, err2 := strconv.Atoi(gidStr)
	if err1 != nil || err2 != nil {
		return 0, 0, fmt.Errorf("%w: User %q: no numeric uid and gid", orchestra.ErrInvalidTask, spec)
	}
	return uid, gid, nil
}

// feedStdin copies r into the task's stdin and closes it at EOF. When r
// fails, the failure is recorded and the task is killed before its stdin
// is closed, so it never takes the failure for the end of its input; it
// ends with 137 and Logs names stdin.
func (c *Container) feedStdin(r io.Reader) {
	_, err := io.Copy(c.stdinW, r)
	if err != nil && !errors.Is(err, syscall.EPIPE) && !errors.Is(err, os.ErrClosed) {
		select {
		case <-c.done: // it ended without needing the rest
			c.closeStdin()
			return
		default:
		}
		if werr := writeStdinError(c.dir, err); werr != nil {
			c.driver.logger.Warn("record the stdin failure", "task", c.id, "err", werr)
		}
		c.driver.logger.Warn("task stdin failed; killing the task", "task", c.id, "err", err)
		c.kill()
		<-c.done
	}
	c.closeStdin()
}

// closeStdin closes the task's stdin once.
func (c *Container) closeStdin() {
	if c.stdinW != nil {
		c.stdinOnce.Do(func() { _ = c.stdinW.Close() })
	}
}

// wait reaps the task, records its exit code on disk, releases the task's
// lock (so every instance sees it done) and marks it done. When PID 1 of a
// PID namespace exits, the kernel kills and reaps everything else in it
// first, so nothing of the task outlives this.
func (c *Container) wait() {
	err := c.cmd.Wait()
	c.closeStdin()
	code := -1
	if ws, ok := c.cmd.ProcessState.Sys().(syscall.WaitStatus); ok {
		switch {
		case ws.Signaled():
			code = 128 + int(ws.Signal())
		case ws.Exited():
			code = ws.ExitStatus()
		}
	}
	var exitErr *exec.ExitError
	if err != nil && !errors.As(err, &exitErr) {
		c.driver.logger.Warn("wait for task", "task", c.id, "err", err)
	}
	if err := writeExit(c.dir, code); err != nil && !errors.Is(err, os.ErrNotExist) {
		c.driver.logger.Warn("record exit code", "task", c.id, "err", err)
	}
	_ = c.lock.Close()
	c.finish(code)
	c.driver.logger.Debug("task done", "task", c.id, "exit_code", code)
}

// finish marks the task done with code, once.
func (c *Container) finish(code int) {
	c.doneOnce.Do(func() {
		c.exitCode = code
		close(c.done)
	})
}

// ID is the task's ID: GetContainer of any instance of the namespace finds
// the task by it.
func (c *Container) ID() string { return c.id }

// Status reports whether the task finished and its exit code.
func (c *Container) Status(_ context.Context) (orchestra.ContainerStatus, error) {
	exited, err := c.exited()
	if err != nil {
		return nil, err
	}
	if !exited {
		return status{}, nil
	}
	return status{done: true, exitCode: c.exitCode}, nil
}

// exited reports whether the task is done, looking at the disk for a task
// another instance started.
func (c *Container) exited() (bool, error) {
	if err := c.poll(); err != nil {
		return false, err
	}
	select {
	case <-c.done:
		return true, nil
	default:
		return false, nil
	}
}

// Logs writes the task's output from the start to stdout and stderr: what
// there is now, or, with follow, on as the task writes until it exited and
// all its output was written (or ctx ended). For a task killed because its
// stdin failed, the error after the output says so.
func (c *Container) Logs(ctx context.Context, stdout, stderr io.Writer, follow bool) error {
	outF, err := c.openLog("stdout")
	if err != nil {
		return err
	}
	defer outF.Close()
	errF, err := c.openLog("stderr")
	if err != nil {
		return err
	}
	defer errF.Close()
	ticker := time.NewTicker(pollInterval)
	defer ticker.Stop()
	for {
		// Look at exited before copying: all output is in the files by then.
		exited, err := c.exited()
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("%s: task %q: logs: %w", Name, c.id, err)
		}
		if _, err := io.Copy(stdout, outF); err != nil {
			return fmt.Errorf("%s: task %q: copy stdout: %w", Name, c.id, err)
		}
		if _, err := io.Copy(stderr, errF); err != nil {
			return fmt.Errorf("%s: task %q: copy stderr: %w", Name, c.id, err)
		}
		if exited || !follow {
			return c.failed()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: task %q: logs: %w", Name, c.id, ctx.Err())
		case <-c.done:
		case <-ticker.C:
		}
	}
}

// openLog opens the task's stdout or stderr file.
func (c *Container) openLog(name string) (*os.File, error) {
	f, err := os.Open(filepath.Join(c.dir, name))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%s: task %q: %s is gone: %w", Name, c.id, name, orchestra.ErrContainerNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: task %q: %w", Name, c.id, err)
	}
	return f, nil
}

// failed is the error Logs gives, after the output, for a task that was
// killed because its stdin failed.
func (c *Container) failed() error {
	if msg, ok := readStdinError(c.dir); ok {
		return fmt.Errorf("%s: task %q was killed: stdin: the caller's reader failed: %s", Name, c.id, msg)
	}
	return nil
}

// Cleanup kills the task if it still runs, waits for it and removes its
// directory. It is idempotent.
func (c *Container) Cleanup(ctx context.Context) error {
	c.driver.mu.Lock()
	if c.driver.containers[c.id] == c {
		delete(c.driver.containers, c.id)
	}
	c.driver.mu.Unlock()
	return c.remove(ctx)
}

// kill sends SIGKILL to the task's PID 1, which takes its whole PID
// namespace down with it. A task another instance started is found by the
// pid it recorded.
func (c *Container) kill() {
	if c.cmd != nil {
		_ = c.cmd.Process.Kill() // after exit this is a harmless error
		return
	}
	if err := killRecorded(c.dir); err != nil {
		c.driver.logger.Warn("kill a task another instance started", "task", c.id, "err", err)
	}
}

// remove kills the task, waits for it and deletes its directory, once.
func (c *Container) remove(ctx context.Context) error {
	timeout := time.NewTimer(killWait)
	defer timeout.Stop()
	ticker := time.NewTicker(pollInterval)
	defer ticker.Stop()
	for {
		c.kill()
		exited, err := c.exited()
		if exited || errors.Is(err, orchestra.ErrContainerNotFound) {
			break // done, or another instance removed it
		}
		select {
		case <-c.done:
		case <-ticker.C: // a task another instance started: look again
		case <-ctx.Done():
			return fmt.Errorf("%s: task %q: wait for the killed task: %w", Name, c.id, ctx.Err())
		case <-timeout.C:
			return fmt.Errorf("%s: task %q: still running %s after SIGKILL", Name, c.id, killWait)
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.removed {
		return nil
	}
	if err := c.removeDir(); err != nil {
		return fmt.Errorf("%s: task %q: %w", Name, c.id, err)
	}
	c.removed = true
	return nil
}

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
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jtarchie/pocketci/orchestra"
)

// followInterval is how often FollowLogs looks for new output.
const followInterval = 20 * time.Millisecond

// killWait bounds how long Cleanup and Close wait for a killed task.
const killWait = 10 * time.Second

// Container is a task, running or done. Its directory
// <root>/<namespace>/tasks/<task> holds stdout, stderr, exit (the exit code,
// once done) and work/ (the working directory). It implements
// orchestra.Container and orchestra.LogFollower.
type Container struct {
	driver *Driver
	id     string
	dir    string
	cmd    *exec.Cmd // nil for a finished task found on disk

	done     chan struct{} // closed once the task exited
	exitCode int           // valid once done is closed

	stdinOnce sync.Once
	stdinW    *os.File

	mu       sync.Mutex
	removed  bool
	stdinErr error // the caller's stdin reader failed; the task was killed
}

// initScript is the task's PID 1: it runs the command as its child and
// exits with the child's status.
const initScript = `"$@"
exit $?`

var (
	_ orchestra.Container   = (*Container)(nil)
	_ orchestra.LogFollower = (*Container)(nil)
)

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
// in this namespace returns the existing container without running again.
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
// contract: volumes are links in the working directory, so a mount inside
// another ("/a" and "/a/b"), or two at one place ("/a" and "a"), would
// write into a volume.
func validateMounts(task orchestra.Task) error {
	for i, a := range task.Mounts {
		for j, b := range task.Mounts {
			pa, pb := mountPath(a.Path), mountPath(b.Path)
			if i != j && (pa == pb && i < j || strings.HasPrefix(pa, pb+"/")) {
				return fmt.Errorf("%w: Mounts[%d].Path %q overlaps Mounts[%d].Path %q", orchestra.ErrInvalidTask, i, a.Path, j, b.Path)
			}
		}
	}
	return nil
}

// mountPath is where a mount is linked, relative to the working directory,
// which stands for the task's root: "/test" and "test" are both "test".
func mountPath(p string) string {
	return strings.TrimPrefix(orchestra.MountPath("/", p), "/")
}

// findLocked returns the container of id, if this instance knows it or an
// earlier instance left it finished on disk. d.mu is held.
func (d *Driver) findLocked(id string) *Container {
	if c, ok := d.containers[id]; ok {
		return c
	}
	dir := filepath.Join(d.dir, "tasks", orchestra.SafeName(orchestra.PathNameRule, id))
	b, err := os.ReadFile(filepath.Join(dir, "exit"))
	if err != nil {
		return nil
	}
	code, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return nil
	}
	c := &Container{driver: d, id: id, dir: dir, done: make(chan struct{}), exitCode: code}
	close(c.done)
	d.containers[id] = c
	return c
}

// start prepares the task's directory and starts its process. d.mu is held.
func (d *Driver) start(task orchestra.Task) (_ *Container, err error) {
	dir := filepath.Join(d.dir, "tasks", orchestra.SafeName(orchestra.PathNameRule, task.ID))
	work := filepath.Join(dir, "work")
	if err := os.RemoveAll(dir); err != nil { // left by a cleaned-up run of this ID
		return nil, fmt.Errorf("clear directory: %w", err)
	}
	if err := os.MkdirAll(work, 0o755); err != nil {
		return nil, fmt.Errorf("create working directory: %w", err)
	}
	defer func() {
		if err != nil {
			_ = os.RemoveAll(dir)
		}
	}()

	// A volume is created implicitly and linked so that ./<path> reaches it.
	for _, m := range task.Mounts {
		v, err := d.volumeLocked(m.Name)
		if err != nil {
			return nil, err
		}
		link := filepath.Join(work, mountPath(m.Path))
		if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
			return nil, fmt.Errorf("mount %q: %w", m.Path, err)
		}
		if err := os.Symlink(v.dir, link); err != nil {
			return nil, fmt.Errorf("mount volume %q at %q: %w", m.Name, m.Path, err)
		}
	}

	// Go puts the process into a new PID namespace; unshare adds mount,
	// IPC and UTS namespaces, mounts a /proc that shows only the task's
	// processes, and execs a shell as the namespace's init (PID 1), which
	// runs the command as PID 2 and exits with its status (128+N for a
	// signal N). The command must not be PID 1 itself: the kernel drops
	// signals a PID 1 has no handler for, so `kill -9 $$` would do nothing.
	// When PID 1 ends, the kernel kills everything else in the namespace.
	args := []string{"--mount-proc", "--ipc", "--uts"}
	if task.User != "" {
		uid, gid, err := lookupUser(task.User)
		if err != nil {
			return nil, err
		}
		if err := os.Chown(work, uid, gid); err != nil {
			return nil, fmt.Errorf("chown working directory: %w", err)
		}
		args = append(args, "--setuid", strconv.Itoa(uid), "--setgid", strconv.Itoa(gid))
	}
	args = append(args, "--", "/bin/sh", "-c", initScript, "init")
	cmd := exec.Command(d.unshare, append(args, task.Command...)...)
	cmd.Dir = work
	cmd.Env = taskEnv(task.Env)
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: syscall.CLONE_NEWPID,
		// If the driver's process dies without Close, the task dies too,
		// and with PID 1 gone the kernel kills the rest of its namespace.
		Pdeathsig: syscall.SIGKILL,
	}
	// Output goes to files: Logs works after exit, from the start, any
	// number of times.
	stdout, err := os.Create(filepath.Join(dir, "stdout"))
	if err != nil {
		return nil, fmt.Errorf("create stdout file: %w", err)
	}
	defer stdout.Close() // the child has its own copy
	stderr, err := os.Create(filepath.Join(dir, "stderr"))
	if err != nil {
		return nil, fmt.Errorf("create stderr file: %w", err)
	}
	defer stderr.Close()
	cmd.Stdout, cmd.Stderr = stdout, stderr
	var stdinR, stdinW *os.File
	if task.Stdin != nil {
		if stdinR, stdinW, err = os.Pipe(); err != nil {
			return nil, fmt.Errorf("stdin pipe: %w", err)
		}
		defer stdinR.Close() // the child has its own copy
		cmd.Stdin = stdinR
	}
	if err := closeOnExecAbove2(); err != nil {
		if stdinW != nil {
			_ = stdinW.Close()
		}
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		if stdinW != nil {
			_ = stdinW.Close()
		}
		return nil, fmt.Errorf("start %v: %w", task.Command, err)
	}

	c := &Container{driver: d, id: task.ID, dir: dir, cmd: cmd, done: make(chan struct{}), stdinW: stdinW}
	d.logger.Debug("task started", "task", task.ID, "pid", cmd.Process.Pid, "command", task.Command, "dir", work)
	if stdinW != nil {
		// Not tied to RunContainer's ctx: stdin keeps flowing after it ends.
		go c.feedStdin(task.Stdin)
	}
	go c.wait()
	return c, nil
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
// fails, the task is killed first, so it never takes the failure for the
// end of its input; it ends with 137 and Logs names stdin.
func (c *Container) feedStdin(r io.Reader) {
	_, err := io.Copy(c.stdinW, r)
	if err != nil && !errors.Is(err, syscall.EPIPE) && !errors.Is(err, os.ErrClosed) {
		select {
		case <-c.done: // it ended without needing the rest
			c.closeStdin()
			return
		default:
		}
		c.mu.Lock()
		c.stdinErr = err
		c.mu.Unlock()
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

// wait reaps the task, records its exit code on disk (so another instance
// of the namespace finds it) and marks it done. When PID 1 of a PID
// namespace exits, the kernel kills and reaps everything else in it first,
// so nothing of the task outlives this.
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
	c.exitCode = code
	if err := os.WriteFile(filepath.Join(c.dir, "exit"), []byte(strconv.Itoa(code)+"\n"), 0o644); err != nil {
		c.driver.logger.Warn("record exit code", "task", c.id, "err", err)
	}
	close(c.done)
	c.driver.logger.Debug("task done", "task", c.id, "exit_code", code)
}

// Status reports whether the task finished and its exit code.
func (c *Container) Status(_ context.Context) (orchestra.ContainerStatus, error) {
	select {
	case <-c.done:
		return status{done: true, exitCode: c.exitCode}, nil
	default:
		return status{}, nil
	}
}

// Logs writes everything the task wrote so far to stdout and stderr.
func (c *Container) Logs(ctx context.Context, stdout, stderr io.Writer) error {
	for _, f := range []struct {
		name string
		w    io.Writer
	}{{"stdout", stdout}, {"stderr", stderr}} {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("%s: task %q: logs: %w", Name, c.id, err)
		}
		file, err := os.Open(filepath.Join(c.dir, f.name))
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("%s: task %q: %s is gone: %w", Name, c.id, f.name, orchestra.ErrContainerNotFound)
		}
		if err != nil {
			return fmt.Errorf("%s: task %q: %w", Name, c.id, err)
		}
		_, err = io.Copy(f.w, file)
		file.Close()
		if err != nil {
			return fmt.Errorf("%s: task %q: copy %s: %w", Name, c.id, f.name, err)
		}
	}
	return c.failed()
}

// failed is the error Logs and FollowLogs give, after the output, for a
// task that was killed because its stdin failed.
func (c *Container) failed() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stdinErr != nil {
		return fmt.Errorf("%s: task %q was killed: stdin: the caller's reader failed: %w", Name, c.id, c.stdinErr)
	}
	return nil
}

// FollowLogs writes the task's output from the start as it is produced, and
// returns once the task exited and all its output was written, or when ctx
// ends.
func (c *Container) FollowLogs(ctx context.Context, stdout, stderr io.Writer) error {
	outF, err := os.Open(filepath.Join(c.dir, "stdout"))
	if err != nil {
		return fmt.Errorf("%s: task %q: follow: %w", Name, c.id, err)
	}
	defer outF.Close()
	errF, err := os.Open(filepath.Join(c.dir, "stderr"))
	if err != nil {
		return fmt.Errorf("%s: task %q: follow: %w", Name, c.id, err)
	}
	defer errF.Close()
	ticker := time.NewTicker(followInterval)
	defer ticker.Stop()
	for {
		// Look at done before copying: all output is in the files by then.
		exited := false
		select {
		case <-c.done:
			exited = true
		default:
		}
		if _, err := io.Copy(stdout, outF); err != nil {
			return fmt.Errorf("%s: task %q: follow stdout: %w", Name, c.id, err)
		}
		if _, err := io.Copy(stderr, errF); err != nil {
			return fmt.Errorf("%s: task %q: follow stderr: %w", Name, c.id, err)
		}
		if exited {
			return c.failed()
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-c.done:
		case <-ticker.C:
		}
	}
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
// namespace down with it.
func (c *Container) kill() {
	if c.cmd != nil {
		_ = c.cmd.Process.Kill() // after exit this is a harmless error
	}
}

// remove kills the task, waits for it and deletes its directory, once.
func (c *Container) remove(ctx context.Context) error {
	c.kill()
	select {
	case <-c.done:
	case <-ctx.Done():
		return fmt.Errorf("%s: task %q: wait for the killed task: %w", Name, c.id, ctx.Err())
	case <-time.After(killWait):
		return fmt.Errorf("%s: task %q: still running %s after SIGKILL", Name, c.id, killWait)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.removed {
		return nil
	}
	if err := os.RemoveAll(c.dir); err != nil {
		return fmt.Errorf("%s: task %q: remove directory: %w", Name, c.id, err)
	}
	c.removed = true
	return nil
}

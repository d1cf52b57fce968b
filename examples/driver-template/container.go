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

	mu      sync.Mutex
	removed bool
}

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
	if err := validate(task); err != nil {
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

// validate refuses tasks the driver cannot run, with ErrInvalidTask.
func validate(task orchestra.Task) error {
	switch {
	case task.ID == "":
		return fmt.Errorf("%w: ID is empty", orchestra.ErrInvalidTask)
	case len(task.Command) == 0 || task.Command[0] == "":
		return fmt.Errorf("%w: Command is empty", orchestra.ErrInvalidTask)
	}
	for k, v := range task.Env {
		if k == "" || strings.ContainsAny(k, "=\x00") || strings.ContainsRune(v, 0) {
			return fmt.Errorf("%w: Env has an invalid entry %q", orchestra.ErrInvalidTask, k)
		}
	}
	for _, m := range task.Mounts {
		if m.Name == "" || mountPath(m.Path) == "" {
			return fmt.Errorf("%w: mount %q at %q needs a volume name and a path below /", orchestra.ErrInvalidTask, m.Name, m.Path)
		}
	}
	return nil
}

// mountPath turns a mount path ("/test") into the path relative to the
// working directory where the volume is linked ("test").
func mountPath(p string) string {
	return strings.TrimPrefix(filepath.Clean("/"+p), "/")
}

// findLocked returns the container of id, if this instance knows it or an
// earlier instance left it finished on disk. d.mu is held.
func (d *Driver) findLocked(id string) *Container {
	if c, ok := d.containers[id]; ok {
		return c
	}
	dir := filepath.Join(d.dir, "tasks", sanitize(id))
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
	dir := filepath.Join(d.dir, "tasks", sanitize(task.ID))
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

	// Go puts the process into a new PID namespace (it is PID 1 there and
	// we are its parent, so its wait status, signals included, is exact);
	// unshare adds mount, IPC and UTS namespaces, mounts a /proc that shows
	// only the task's processes, and execs the command. (unshare --fork
	// --pid would hide a signal death: it exits 1 when its child is killed.)
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
	cmd := exec.Command(d.unshare, append(append(args, "--"), task.Command...)...)
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
		go func() {
			if _, err := io.Copy(stdinW, task.Stdin); err != nil && !errors.Is(err, syscall.EPIPE) && !errors.Is(err, os.ErrClosed) {
				d.logger.Warn("task stdin", "task", task.ID, "err", err)
			}
			c.closeStdin()
		}()
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
			return nil
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

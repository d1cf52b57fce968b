//go:build linux

package native

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
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

// followInterval is how often FollowLogs looks for new output.
const followInterval = 20 * time.Millisecond

// killWait bounds how long Cleanup and Close wait for a killed process.
const killWait = 10 * time.Second

// Container is a task running, or done, as a local process group. It
// implements orchestra.Container and orchestra.LogFollower.
type Container struct {
	driver *Driver
	id     string
	dir    string // <root>/<namespace>/tasks/<task>: logs and work/
	cmd    *exec.Cmd
	pgid   int

	done     chan struct{} // closed once the process was reaped
	exitCode int           // valid once done is closed

	mu      sync.Mutex // guards reaped, removed and the kill-vs-reap race
	reaped  bool
	removed bool

	stdinOnce sync.Once
	stdinW    *os.File
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

// ExitCode is the task's exit code, 128+N when killed by signal N.
func (s status) ExitCode() int { return s.exitCode }

// RunContainer starts task as a local process and returns at once. The same
// task ID returns the existing container without running the command again.
func (d *Driver) RunContainer(ctx context.Context, task orchestra.Task) (orchestra.Container, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("native: run task %q: %w", task.ID, err)
	}
	if err := validateTask(task); err != nil {
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
	if c, ok := d.recoverLocked(task.ID); ok {
		return c, nil
	}
	c, err := d.start(task)
	if err != nil {
		return nil, err
	}
	d.containers[task.ID] = c
	return c, nil
}

// validateTask checks the fields native relies on.
func validateTask(task orchestra.Task) error {
	invalid := func(format string, args ...any) error {
		return fmt.Errorf("native: task %q: %w: %s", task.ID, orchestra.ErrInvalidTask, fmt.Sprintf(format, args...))
	}
	if task.ID == "" {
		return invalid("ID is empty")
	}
	if len(task.Command) == 0 || task.Command[0] == "" {
		return invalid("Command is empty")
	}
	for k, v := range task.Env {
		if k == "" || strings.ContainsAny(k, "=\x00") || strings.ContainsRune(v, 0) {
			return invalid("Env has an invalid entry %q", k)
		}
	}
	seen := map[string]bool{}
	for _, m := range task.Mounts {
		rel, err := mountPath(m.Path)
		if err != nil {
			return invalid("Mounts: %v", err)
		}
		if m.Name == "" {
			return invalid("Mounts: mount at %q has no volume name", m.Path)
		}
		if seen[rel] {
			return invalid("Mounts: two mounts at %q", m.Path)
		}
		seen[rel] = true
	}
	return nil
}

// mountPath turns a mount path ("/test") into the path relative to the
// working directory where the volume is linked ("test").
func mountPath(p string) (string, error) {
	rel := strings.TrimPrefix(filepath.Clean("/"+p), "/")
	if rel == "" {
		return "", fmt.Errorf("mount path %q is the root", p)
	}
	return rel, nil
}

// start prepares the task's directory and starts its process. d.mu is held.
func (d *Driver) start(task orchestra.Task) (_ *Container, err error) {
	dir := filepath.Join(d.dir, "tasks", sanitize(task.ID))
	work := filepath.Join(dir, "work")
	// A directory left by an earlier, cleaned-up run of this ID is replaced.
	if err := os.RemoveAll(dir); err != nil {
		return nil, fmt.Errorf("native: task %q: clear directory: %w", task.ID, err)
	}
	if err := os.MkdirAll(work, 0o755); err != nil {
		return nil, fmt.Errorf("native: task %q: create working directory: %w", task.ID, err)
	}
	defer func() {
		if err != nil {
			_ = os.RemoveAll(dir)
		}
	}()

	for _, m := range task.Mounts {
		v, err := d.volumeLocked(m.Name)
		if err != nil {
			return nil, fmt.Errorf("native: task %q: %w", task.ID, err)
		}
		rel, _ := mountPath(m.Path) // validated
		link := filepath.Join(work, rel)
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

	stdout, err := os.OpenFile(filepath.Join(dir, "stdout"), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, fmt.Errorf("native: task %q: create stdout file: %w", task.ID, err)
	}
	defer stdout.Close()
	stderr, err := os.OpenFile(filepath.Join(dir, "stderr"), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, fmt.Errorf("native: task %q: create stderr file: %w", task.ID, err)
	}
	defer stderr.Close()

	cmd := &exec.Cmd{
		Path:   path,
		Args:   task.Command,
		Dir:    work,
		Env:    taskEnv(task.Env),
		Stdout: stdout,
		Stderr: stderr,
		SysProcAttr: &syscall.SysProcAttr{
			Setpgid:    true,
			Credential: cred,
			// If the driver's process dies without Close, the task's main
			// process dies with it. (Go never ends the forking OS thread
			// unless a goroutine locked to it exits, so this is safe.)
			Pdeathsig: syscall.SIGKILL,
		},
	}
	var stdinR, stdinW *os.File
	if task.Stdin != nil {
		stdinR, stdinW, err = os.Pipe()
		if err != nil {
			return nil, fmt.Errorf("native: task %q: stdin pipe: %w", task.ID, err)
		}
		cmd.Stdin = stdinR
	}
	if err := cmd.Start(); err != nil {
		if stdinR != nil {
			_ = stdinR.Close()
			_ = stdinW.Close()
		}
		return nil, fmt.Errorf("native: task %q: start %q: %w", task.ID, path, err)
	}
	if stdinR != nil {
		_ = stdinR.Close() // the child has its copy
	}

	c := &Container{
		driver: d,
		id:     task.ID,
		dir:    dir,
		cmd:    cmd,
		pgid:   cmd.Process.Pid,
		done:   make(chan struct{}),
		stdinW: stdinW,
	}
	d.logger.Debug("task started", "task", task.ID, "pid", c.pgid, "command", task.Command, "dir", work)
	if stdinW != nil {
		// Not tied to RunContainer's ctx: stdin keeps flowing after it ends.
		go c.feedStdin(task.Stdin)
	}
	go c.reap()
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

// feedStdin copies r into the process's stdin and closes it at the end.
func (c *Container) feedStdin(r io.Reader) {
	_, err := io.Copy(c.stdinW, r)
	if err != nil && !errors.Is(err, syscall.EPIPE) && !errors.Is(err, os.ErrClosed) {
		c.driver.logger.Warn("task stdin", "task", c.id, "err", err)
	}
	c.closeStdin()
}

func (c *Container) closeStdin() {
	if c.stdinW == nil {
		return
	}
	c.stdinOnce.Do(func() { _ = c.stdinW.Close() })
}

// reap waits for the process to exit, kills what is left of its process
// group (as a container runtime does when the main process ends), and
// records the exit code.
func (c *Container) reap() {
	if err := waitExited(c.pgid); err != nil {
		c.driver.logger.Warn("wait for task", "task", c.id, "err", err)
	}
	c.mu.Lock()
	// The leader is a zombie (not reaped yet), so its pid, which is the
	// group's id, cannot have been reused.
	_ = syscall.Kill(-c.pgid, syscall.SIGKILL)
	err := c.cmd.Wait()
	c.reaped = true
	c.mu.Unlock()
	c.closeStdin()
	if !waitGroupGone(c.pgid, killWait) {
		c.driver.logger.Warn("processes of the task survive SIGKILL", "task", c.id, "pgid", c.pgid)
	}

	code := -1
	if ps := c.cmd.ProcessState; ps != nil {
		if ws, ok := ps.Sys().(syscall.WaitStatus); ok {
			switch {
			case ws.Signaled():
				code = 128 + int(ws.Signal())
			case ws.Exited():
				code = ws.ExitStatus()
			}
		}
	}
	var exitErr *exec.ExitError
	if err != nil && !errors.As(err, &exitErr) {
		c.driver.logger.Warn("wait for task", "task", c.id, "err", err)
	}
	c.exitCode = code
	if err := writeExitFile(c.dir, code); err != nil {
		c.driver.logger.Warn("record exit code", "task", c.id, "err", err)
	}
	close(c.done)
	c.driver.logger.Debug("task done", "task", c.id, "exit_code", code)
}

// kill sends SIGKILL to the process group unless it was already reaped.
func (c *Container) kill() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.reaped {
		_ = syscall.Kill(-c.pgid, syscall.SIGKILL)
	}
}

// Status reports whether the process finished and its exit code.
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
	if err := copyFile(ctx, filepath.Join(c.dir, "stdout"), stdout); err != nil {
		return fmt.Errorf("native: task %q: stdout: %w", c.id, err)
	}
	if err := copyFile(ctx, filepath.Join(c.dir, "stderr"), stderr); err != nil {
		return fmt.Errorf("native: task %q: stderr: %w", c.id, err)
	}
	return nil
}

func copyFile(ctx context.Context, path string, w io.Writer) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("log file is gone (container removed): %w", orchestra.ErrContainerNotFound)
	}
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(w, f)
	return err
}

// FollowLogs writes the task's output from the start as it is produced and
// returns once the process exited and all its output was written, or when
// ctx ends.
func (c *Container) FollowLogs(ctx context.Context, stdout, stderr io.Writer) error {
	outF, err := os.Open(filepath.Join(c.dir, "stdout"))
	if err != nil {
		return fmt.Errorf("native: task %q: follow stdout: %w", c.id, err)
	}
	defer outF.Close()
	errF, err := os.Open(filepath.Join(c.dir, "stderr"))
	if err != nil {
		return fmt.Errorf("native: task %q: follow stderr: %w", c.id, err)
	}
	defer errF.Close()

	ticker := time.NewTicker(followInterval)
	defer ticker.Stop()
	for {
		// Look at done before draining: whatever was written before the
		// exit is in the files by then.
		exited := false
		select {
		case <-c.done:
			exited = true
		default:
		}
		if _, err := io.Copy(stdout, outF); err != nil {
			return fmt.Errorf("native: task %q: follow stdout: %w", c.id, err)
		}
		if _, err := io.Copy(stderr, errF); err != nil {
			return fmt.Errorf("native: task %q: follow stderr: %w", c.id, err)
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

// Cleanup kills the process group if it still runs, waits for it and
// removes the task's directory. It is idempotent.
func (c *Container) Cleanup(ctx context.Context) error {
	c.driver.mu.Lock()
	if cur, ok := c.driver.containers[c.id]; ok && cur == c {
		delete(c.driver.containers, c.id)
	}
	c.driver.mu.Unlock()
	return c.remove(ctx)
}

// remove kills, waits and deletes the task directory.
func (c *Container) remove(ctx context.Context) error {
	c.kill()
	timer := time.NewTimer(killWait)
	defer timer.Stop()
	select {
	case <-c.done:
	case <-ctx.Done():
		return fmt.Errorf("native: task %q: wait for the killed process: %w", c.id, ctx.Err())
	case <-timer.C:
		return fmt.Errorf("native: task %q: process group %d did not exit within %s of SIGKILL", c.id, c.pgid, killWait)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.removed {
		return nil
	}
	if err := os.RemoveAll(c.dir); err != nil {
		return fmt.Errorf("native: task %q: remove directory: %w", c.id, err)
	}
	c.removed = true
	return nil
}

// exitFile is the file in a task's directory that holds its exit code once
// it is done, so that another driver instance of the namespace finds it.
const exitFile = "exit"

// writeExitFile records code in dir atomically.
func writeExitFile(dir string, code int) error {
	tmp := filepath.Join(dir, exitFile+".tmp")
	if err := os.WriteFile(tmp, []byte(strconv.Itoa(code)+"\n"), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, exitFile))
}

// recoverLocked returns a finished container of id that an earlier driver
// instance of this namespace left on disk. d.mu is held.
func (d *Driver) recoverLocked(id string) (*Container, bool) {
	if d.closed {
		return nil, false
	}
	dir := filepath.Join(d.dir, "tasks", sanitize(id))
	b, err := os.ReadFile(filepath.Join(dir, exitFile))
	if err != nil {
		return nil, false
	}
	code, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return nil, false
	}
	c := &Container{
		driver:   d,
		id:       id,
		dir:      dir,
		done:     make(chan struct{}),
		exitCode: code,
		reaped:   true, // no process of ours: never signal pgid 0
	}
	close(c.done)
	d.containers[id] = c
	d.logger.Debug("task recovered from disk", "task", id, "exit_code", code)
	return c, true
}

package ctxdriver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	"github.com/jtarchie/pocketci/orchestra"
)

// initScript is each task's PID 1. Its arguments: pairs of a volume
// directory and its mount point (outer mounts first), "--", the working
// directory, "unset" or "=" and the task's OLDPWD (cd sets it), then the
// command. A mount or working directory that cannot be set up ends the
// task with 125. The command runs as PID 1's child: a PID 1 ignores the
// signals it has no handler for, so `kill -9 $$` would do nothing.
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

// RunContainer starts the task bound to ctx.
func (d *Driver) RunContainer(ctx context.Context, task orchestra.Task) (orchestra.Container, error) {
	if err := orchestra.ValidateTask(task); err != nil {
		return nil, err
	}
	if err := validate(task); err != nil {
		return nil, fmt.Errorf("ctxdriver: task %q: %w", task.ID, err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, fmt.Errorf("ctxdriver: run task %q: %w", task.ID, orchestra.ErrClosed)
	}
	if c, ok := d.containers[task.ID]; ok {
		return c, nil
	}
	c, err := d.start(ctx, task)
	if err != nil {
		return nil, fmt.Errorf("ctxdriver: task %q: %w", task.ID, err)
	}
	d.containers[task.ID] = c
	return c, nil
}

// validate refuses what the fixture cannot do: another user, and two
// mounts at one place ("/a" and "a": the working directory stands for the
// root).
func validate(task orchestra.Task) error {
	if task.User != "" {
		return fmt.Errorf("%w: User: the fixture runs tasks as the driver's user only", orchestra.ErrInvalidTask)
	}
	seen := map[string]bool{}
	for i, m := range task.Mounts {
		p := relPath(m.Path)
		if seen[p] {
			return fmt.Errorf("%w: Mounts[%d].Path %q is mounted twice", orchestra.ErrInvalidTask, i, m.Path)
		}
		seen[p] = true
	}
	return nil
}

// relPath is p relative to the working directory, which stands for the
// root: "/a" and "a" are both "a".
func relPath(p string) string {
	return strings.TrimPrefix(orchestra.MountPath("/", p), "/")
}

// start prepares the task's directory and starts its process. d.mu is held.
func (d *Driver) start(ctx context.Context, task orchestra.Task) (_ *container, err error) {
	c := &container{driver: d, id: task.ID, dir: d.taskDir(task.ID), done: make(chan struct{})}
	work := filepath.Join(c.dir, "work")
	// Cleanup removes a task's directory: one that is there belongs to a
	// task another instance started, which this fixture cannot reach.
	if _, err := os.Stat(c.dir); err == nil {
		return nil, fmt.Errorf("started by another driver instance, which this fixture cannot reach: %w", errors.ErrUnsupported)
	}
	if err := os.MkdirAll(filepath.Dir(c.dir), 0o755); err != nil {
		return nil, fmt.Errorf("create task directory: %w", err)
	}
	if err := os.Mkdir(c.dir, 0o755); err != nil {
		return nil, fmt.Errorf("create task directory: %w", err)
	}
	if err := os.Mkdir(work, 0o755); err != nil {
		return nil, fmt.Errorf("create task directory: %w", err)
	}
	defer func() {
		if err != nil {
			_ = os.RemoveAll(c.dir)
		}
	}()
	args, err := d.initArgs(task, work)
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, "unshare", args...) // the task lives as long as ctx
	cmd.Dir = work
	cmd.Stdin = task.Stdin
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID, Pdeathsig: syscall.SIGKILL}
	cmd.Env = taskEnv(task.Env)
	var files []*os.File
	for _, name := range []string{"stdout", "stderr"} {
		f, err := os.Create(filepath.Join(c.dir, name))
		if err != nil {
			return nil, fmt.Errorf("create %s file: %w", name, err)
		}
		defer f.Close()
		files = append(files, f)
	}
	cmd.Stdout, cmd.Stderr = files[0], files[1]
	if err := reportDeadline(ctx, task, files[0]); err != nil {
		return nil, err
	}
	// A descriptor this process inherited without close-on-exec (from a
	// shell, a CI runner, the host that started the plugin) would reach
	// the task: mark every one above 2 close-on-exec (close_range(2),
	// number 436 on every architecture, flag CLOSE_RANGE_CLOEXEC).
	if _, _, errno := syscall.RawSyscall(436, 3, ^uintptr(0)>>32, 4); errno != 0 {
		return nil, fmt.Errorf("mark descriptors close-on-exec: %w", errno)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start: %w", err)
	}
	c.cmd = cmd
	go c.wait()
	return c, nil
}

// initArgs are unshare's arguments: a private /proc (and so a mount
// namespace of its own), then initScript with the task's mounts, sorted so
// that an outer one comes before an inner one, its working directory and
// its command. d.mu is held.
func (d *Driver) initArgs(task orchestra.Task, work string) ([]string, error) {
	mounts := append(orchestra.Mounts(nil), task.Mounts...)
	sort.Slice(mounts, func(i, j int) bool { return relPath(mounts[i].Path) < relPath(mounts[j].Path) })
	args := []string{"--mount-proc", "--", "/bin/sh", "-c", initScript, "init"}
	for _, m := range mounts {
		v, err := d.volumeLocked(m.Name)
		if err != nil {
			return nil, err
		}
		args = append(args, v.dir, filepath.Join(work, relPath(m.Path)))
	}
	oldpwd := "unset"
	if v, ok := task.Env["OLDPWD"]; ok {
		oldpwd = "=" + v
	}
	args = append(args, "--", filepath.Join(work, orchestra.WorkingDir("/", task)), oldpwd)
	return append(args, task.Command...), nil
}

// taskEnv is the task's Env, with a default PATH when it has none.
func taskEnv(env map[string]string) []string {
	out := []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out // a PATH of the task's comes after the default: exec keeps the last
}

// reportDeadline writes the deadline of ctx first on stdout when the task
// asks for it with ReportEnv.
func reportDeadline(ctx context.Context, task orchestra.Task, stdout *os.File) error {
	if _, ok := task.Env[ReportEnv]; !ok {
		return nil
	}
	report := "deadline none\n"
	if dl, ok := ctx.Deadline(); ok {
		report = fmt.Sprintf("deadline %d\n", dl.UnixNano())
	}
	if _, err := stdout.WriteString(report); err != nil {
		return fmt.Errorf("report the deadline: %w", err)
	}
	return nil
}

type container struct {
	driver *Driver
	id     string
	dir    string
	cmd    *exec.Cmd
	done   chan struct{}
	code   int
	err    error // the stdin copy failed
}

var _ orchestra.Container = (*container)(nil)

func (c *container) wait() {
	err := c.cmd.Wait()
	var exitErr *exec.ExitError
	if err != nil && !errors.As(err, &exitErr) {
		c.err = fmt.Errorf("ctxdriver: stdin: %w", err)
	}
	c.code = c.cmd.ProcessState.ExitCode()
	if ws, ok := c.cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		c.code = 128 + int(ws.Signal())
	}
	close(c.done)
}

type status struct {
	done bool
	code int
}

func (s status) IsDone() bool  { return s.done }
func (s status) ExitCode() int { return s.code }

// ID is the task's ID.
func (c *container) ID() string { return c.id }

func (c *container) Status(context.Context) (orchestra.ContainerStatus, error) {
	select {
	case <-c.done:
		return status{true, c.code}, nil
	default:
		return status{}, nil
	}
}

// Logs writes the output there is now; with follow, it first waits until
// the task exited (or ctx ends), then writes all of it.
func (c *container) Logs(ctx context.Context, stdout, stderr io.Writer, follow bool) error {
	if follow {
		select {
		case <-c.done:
		case <-ctx.Done():
			return fmt.Errorf("ctxdriver: task %q: follow logs: %w", c.id, ctx.Err())
		}
	}
	for _, f := range []struct {
		name string
		w    io.Writer
	}{{"stdout", stdout}, {"stderr", stderr}} {
		b, err := os.ReadFile(filepath.Join(c.dir, f.name))
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("ctxdriver: task %q: %s is gone: %w", c.id, f.name, orchestra.ErrContainerNotFound)
		}
		if err != nil {
			return fmt.Errorf("ctxdriver: task %q: %w", c.id, err)
		}
		if _, err := f.w.Write(b); err != nil {
			return fmt.Errorf("ctxdriver: task %q: write %s: %w", c.id, f.name, err)
		}
	}
	select {
	case <-c.done:
		return c.err
	default:
		return nil
	}
}

// Cleanup kills the task, waits for it and removes its directory.
func (c *container) Cleanup(context.Context) error {
	c.driver.mu.Lock()
	if c.driver.containers[c.id] == c {
		delete(c.driver.containers, c.id)
	}
	c.driver.mu.Unlock()
	return c.remove()
}

func (c *container) remove() error {
	_ = c.cmd.Process.Kill()
	<-c.done
	if err := os.RemoveAll(c.dir); err != nil {
		return fmt.Errorf("ctxdriver: task %q: remove directory: %w", c.id, err)
	}
	return nil
}

// Package ctxdriver is a test fixture: a small driver written the way the
// guide's examples and many real drivers are, binding each task's process
// to the ctx that RunContainer receives (exec.CommandContext). The task
// runs exactly as long as that ctx lives; when it ends, the task is killed.
// The conformance suite must pass it in process and through a plugin, which
// is only possible when the plugin's RunContainer ctx lives as long as the
// caller's (protocol 1.3).
//
// Each task runs in a PID namespace of its own (so that killing its PID 1,
// a shell that runs the command, kills every descendant). Linux only; it
// needs root. It does not implement orchestra.LogFollower, so the suite's
// follow cases report skipped for it.
package ctxdriver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/jtarchie/pocketci/orchestra"
)

// Name is the name the fixture is served under.
const Name = "ctxdriver"

// ReportEnv, set in a task's environment, makes the task's stdout start
// with the deadline of the ctx RunContainer got ("deadline none" or
// "deadline <unix nanoseconds>"), so that a test sees it crossed the wire.
const ReportEnv = "CTXDRIVER_REPORT"

// RootEnv overrides the directory under which namespaces live.
const RootEnv = "CTXDRIVER_ROOT"

// Root is $CTXDRIVER_ROOT, or <os.TempDir()>/pocketci-ctxdriver.
func Root() string {
	if r := os.Getenv(RootEnv); r != "" {
		return r
	}
	return filepath.Join(os.TempDir(), "pocketci-"+Name)
}

func namespaceDir(namespace string) string {
	return filepath.Join(Root(), orchestra.SafeName(orchestra.PathNameRule, namespace))
}

// Driver runs the tasks of one namespace.
type Driver struct {
	dir string

	mu         sync.Mutex
	closed     bool
	containers map[string]*container
}

// New is the fixture's orchestra.InitFunc.
func New(namespace string, _ *slog.Logger) (orchestra.Driver, error) {
	if err := orchestra.ValidateNamespace(namespace); err != nil {
		return nil, err
	}
	dir := namespaceDir(namespace)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("ctxdriver: %w", err)
	}
	return &Driver{dir: dir, containers: map[string]*container{}}, nil
}

// Name returns Name.
func (d *Driver) Name() string { return Name }

// CreateVolume creates the directory of a volume.
func (d *Driver) CreateVolume(_ context.Context, name string, _ int) (orchestra.Volume, error) {
	if err := orchestra.ValidateVolumeName(name); err != nil {
		return nil, err
	}
	v := &volume{name: name, dir: filepath.Join(d.dir, "volumes", orchestra.SafeName(orchestra.PathNameRule, name))}
	if err := os.MkdirAll(v.dir, 0o755); err != nil {
		return nil, fmt.Errorf("ctxdriver: %w", err)
	}
	return v, nil
}

// RunContainer starts the task bound to ctx.
func (d *Driver) RunContainer(ctx context.Context, task orchestra.Task) (orchestra.Container, error) {
	if err := orchestra.ValidateTask(task); err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, orchestra.ErrClosed
	}
	if c, ok := d.containers[task.ID]; ok {
		return c, nil
	}
	c := &container{dir: filepath.Join(d.dir, "tasks", orchestra.SafeName(orchestra.PathNameRule, task.ID)), done: make(chan struct{})}
	work := filepath.Join(c.dir, "work")
	if err := os.MkdirAll(work, 0o755); err != nil {
		return nil, fmt.Errorf("ctxdriver: %w", err)
	}
	for _, m := range task.Mounts {
		v, err := d.CreateVolume(ctx, m.Name, 0)
		if err != nil {
			return nil, err
		}
		link := filepath.Join(work, orchestra.MountPath("/", m.Path))
		if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
			return nil, fmt.Errorf("ctxdriver: %w", err)
		}
		if err := os.Symlink(v.(*volume).dir, link); err != nil {
			return nil, fmt.Errorf("ctxdriver: %w", err)
		}
	}
	args := append([]string{"--mount-proc", "--", "/bin/sh", "-c", "\"$@\"\nexit $?", "init"}, task.Command...)
	cmd := exec.CommandContext(ctx, "unshare", args...) // the task lives as long as ctx
	cmd.Dir = work
	cmd.Stdin = task.Stdin
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID, Pdeathsig: syscall.SIGKILL}
	env := []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	for k, v := range task.Env {
		env = append(env, k+"="+v)
	}
	sort.Strings(env)
	cmd.Env = env
	var files []*os.File
	for _, name := range []string{"stdout", "stderr"} {
		f, err := os.Create(filepath.Join(c.dir, name))
		if err != nil {
			return nil, fmt.Errorf("ctxdriver: %w", err)
		}
		defer f.Close()
		files = append(files, f)
	}
	cmd.Stdout, cmd.Stderr = files[0], files[1]
	if _, ok := task.Env[ReportEnv]; ok {
		report := "deadline none\n"
		if dl, ok := ctx.Deadline(); ok {
			report = fmt.Sprintf("deadline %d\n", dl.UnixNano())
		}
		if _, err := files[0].WriteString(report); err != nil {
			return nil, fmt.Errorf("ctxdriver: %w", err)
		}
	}
	// A descriptor this process inherited without close-on-exec (from a
	// shell, a CI runner, the host that started the plugin) would reach
	// the task: mark every one above 2 close-on-exec (close_range(2),
	// number 436 on every architecture, flag CLOSE_RANGE_CLOEXEC).
	if _, _, errno := syscall.RawSyscall(436, 3, ^uintptr(0)>>32, 4); errno != 0 {
		return nil, fmt.Errorf("ctxdriver: mark descriptors close-on-exec: %w", errno)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("ctxdriver: start: %w", err)
	}
	c.cmd = cmd
	go c.wait()
	d.containers[task.ID] = c
	return c, nil
}

// Close kills every task and removes the namespace.
func (d *Driver) Close() error {
	d.mu.Lock()
	d.closed = true
	cs := d.containers
	d.containers = map[string]*container{}
	d.mu.Unlock()
	var errs []error
	for _, c := range cs {
		errs = append(errs, c.Cleanup(context.Background()))
	}
	errs = append(errs, os.RemoveAll(d.dir))
	return errors.Join(errs...)
}

type container struct {
	dir  string
	cmd  *exec.Cmd
	done chan struct{}
	code int
	err  error // the stdin copy failed
}

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

func (c *container) Status(context.Context) (orchestra.ContainerStatus, error) {
	select {
	case <-c.done:
		return status{true, c.code}, nil
	default:
		return status{}, nil
	}
}

func (c *container) Logs(_ context.Context, stdout, stderr io.Writer) error {
	for name, w := range map[string]io.Writer{"stdout": stdout, "stderr": stderr} {
		b, err := os.ReadFile(filepath.Join(c.dir, name))
		if err != nil {
			return fmt.Errorf("ctxdriver: %w", err)
		}
		if _, err := w.Write(b); err != nil {
			return err
		}
	}
	select {
	case <-c.done:
		return c.err
	default:
		return nil
	}
}

func (c *container) Cleanup(context.Context) error {
	_ = c.cmd.Process.Kill()
	<-c.done
	return os.RemoveAll(c.dir)
}

type volume struct{ name, dir string }

func (v *volume) Name() string                  { return v.name }
func (v *volume) Cleanup(context.Context) error { return os.RemoveAll(v.dir) }

// Leaks reports the namespace directory and every live process whose
// working directory is under it.
func Leaks(namespace string) ([]string, error) {
	dir := namespaceDir(namespace)
	var left []string
	if _, err := os.Stat(dir); err == nil {
		left = append(left, "directory "+dir)
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/cwd")
	for _, p := range procs {
		cwd, err := os.Readlink(p)
		if err != nil || !strings.HasPrefix(strings.TrimSuffix(cwd, " (deleted)"), dir) {
			continue
		}
		pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
		stat, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if i := strings.LastIndexByte(string(stat), ')'); i >= 0 && strings.HasPrefix(string(stat[i+1:]), " Z") {
			continue
		}
		left = append(left, fmt.Sprintf("process %d in %s", pid, cwd))
	}
	return left, nil
}

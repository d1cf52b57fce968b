package pluginsdk_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jtarchie/pocketci/orchestra"
)

// ctxDriver is a small driver written the way the guide reads and the way
// pocketci's own native driver is written: each task is a local process
// started with exec.CommandContext on the ctx RunContainer receives, so the
// task lives exactly as long as that ctx. In process that is the caller's
// ctx; through a plugin it must be too (protocol 1.3's Run stream).
//
// With CTXDRIVER_REPORT set in a task's environment, the task's stdout
// starts with the deadline of the ctx the driver got ("deadline none" or
// "deadline <unix nanoseconds>"), so a test can see it crossed the wire.
type ctxDriver struct {
	dir string

	mu         sync.Mutex
	closed     bool
	containers map[string]*ctxContainer
}

func newCtxDriver(namespace string, _ *slog.Logger) (orchestra.Driver, error) {
	if err := orchestra.ValidateNamespace(namespace); err != nil {
		return nil, err
	}
	dir := filepath.Join(ctxRoot(), orchestra.SafeName(orchestra.PathNameRule, namespace))
	if err := os.MkdirAll(filepath.Join(dir, "volumes"), 0o755); err != nil {
		return nil, fmt.Errorf("ctxdriver: %w", err)
	}
	return &ctxDriver{dir: dir, containers: map[string]*ctxContainer{}}, nil
}

// ctxRoot holds every namespace of the fixture driver.
func ctxRoot() string {
	if d := os.Getenv("CTXDRIVER_ROOT"); d != "" {
		return d
	}
	return filepath.Join(os.TempDir(), fmt.Sprintf("ctxdriver-%d", os.Getuid()))
}

func (d *ctxDriver) Name() string { return "ctxexec" }

func (d *ctxDriver) Close() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	containers := d.containers
	d.containers = nil
	d.mu.Unlock()
	for _, c := range containers {
		c.kill()
	}
	return os.RemoveAll(d.dir)
}

func (d *ctxDriver) CreateVolume(_ context.Context, name string, _ int) (orchestra.Volume, error) {
	if err := orchestra.ValidateVolumeName(name); err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, orchestra.ErrClosed
	}
	v := &ctxVolume{name: name, dir: d.volumeDir(name)}
	return v, os.MkdirAll(v.dir, 0o755)
}

func (d *ctxDriver) volumeDir(name string) string {
	return filepath.Join(d.dir, "volumes", orchestra.SafeName(orchestra.PathNameRule, name))
}

func (d *ctxDriver) RunContainer(ctx context.Context, task orchestra.Task) (orchestra.Container, error) {
	if err := orchestra.ValidateTask(task); err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, fmt.Errorf("ctxdriver: task %q: %w", task.ID, orchestra.ErrClosed)
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

func (d *ctxDriver) start(ctx context.Context, task orchestra.Task) (*ctxContainer, error) {
	dir := filepath.Join(d.dir, "tasks", orchestra.SafeName(orchestra.PathNameRule, task.ID))
	work := filepath.Join(dir, "work")
	if err := os.MkdirAll(work, 0o755); err != nil {
		return nil, err
	}
	for _, m := range task.Mounts {
		vol := d.volumeDir(m.Name)
		if err := os.MkdirAll(vol, 0o755); err != nil {
			return nil, err
		}
		link := filepath.Join(work, m.Path)
		if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
			return nil, err
		}
		if err := os.Symlink(vol, link); err != nil {
			return nil, err
		}
	}
	stdout, err := os.Create(filepath.Join(dir, "stdout"))
	if err != nil {
		return nil, err
	}
	defer stdout.Close()
	stderr, err := os.Create(filepath.Join(dir, "stderr"))
	if err != nil {
		return nil, err
	}
	defer stderr.Close()
	if _, ok := task.Env["CTXDRIVER_REPORT"]; ok {
		if dl, ok := ctx.Deadline(); ok {
			fmt.Fprintf(stdout, "deadline %d\n", dl.UnixNano())
		} else {
			fmt.Fprintln(stdout, "deadline none")
		}
	}
	cmd := exec.CommandContext(ctx, task.Command[0], task.Command[1:]...)
	cmd.Dir = work
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	for k, v := range task.Env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	// Its own session: every descendant stays in it unless it calls setsid,
	// and one that does is found as a descendant (killTree).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	cmd.Cancel = func() error { killTree(cmd.Process.Pid); return nil }
	var stdinW *os.File
	if task.Stdin != nil {
		r, w, err := os.Pipe()
		if err != nil {
			return nil, err
		}
		defer r.Close()
		cmd.Stdin, stdinW = r, w
	}
	if err := cmd.Start(); err != nil {
		if stdinW != nil {
			stdinW.Close()
		}
		return nil, err
	}
	c := &ctxContainer{driver: d, id: task.ID, dir: dir, cmd: cmd, done: make(chan struct{})}
	if stdinW != nil {
		go func() {
			if _, err := io.Copy(stdinW, task.Stdin); err != nil {
				// A failed input is not its end: stop the task first, so it
				// never reads EOF and succeeds on truncated input.
				killTree(cmd.Process.Pid)
			}
			stdinW.Close()
		}()
	}
	go c.wait()
	return c, nil
}

type ctxContainer struct {
	driver *ctxDriver
	id     string
	dir    string
	cmd    *exec.Cmd
	done   chan struct{}
	code   int
}

func (c *ctxContainer) wait() {
	err := c.cmd.Wait()
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit):
		if ws, ok := exit.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			c.code = 128 + int(ws.Signal())
		} else {
			c.code = exit.ExitCode()
		}
	default:
		c.code = -1
	}
	close(c.done)
}

func (c *ctxContainer) kill() {
	killTree(c.cmd.Process.Pid)
	<-c.done
}

// killTree kills the session a task leads and every descendant of its
// process, also those that left the session with setsid.
func killTree(pid int) {
	tree := treeOf(pid)
	// The task's group first, in one signal: a shell must not outlive its
	// killed child long enough to go on.
	syscall.Kill(-pid, syscall.SIGKILL)
	for _, p := range tree {
		syscall.Kill(p, syscall.SIGKILL)
	}
}

// treeOf lists the processes in pid's session and their descendants, from
// /proc.
func treeOf(pid int) []int {
	entries, _ := os.ReadDir("/proc")
	parent := map[int]int{}
	var tree []int
	in := map[int]bool{pid: true}
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		data, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid pgrp session ...
		f := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+1:]))
		if len(f) < 4 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		sid, _ := strconv.Atoi(f[3])
		parent[p] = ppid
		if sid == pid && p != pid {
			in[p] = true
			tree = append(tree, p)
		}
	}
	for changed := true; changed; {
		changed = false
		for p, pp := range parent {
			if in[pp] && !in[p] {
				in[p] = true
				tree = append(tree, p)
				changed = true
			}
		}
	}
	return tree
}

type ctxStatus struct {
	done bool
	code int
}

func (s ctxStatus) IsDone() bool  { return s.done }
func (s ctxStatus) ExitCode() int { return s.code }

func (c *ctxContainer) Status(context.Context) (orchestra.ContainerStatus, error) {
	select {
	case <-c.done:
		return ctxStatus{true, c.code}, nil
	default:
		return ctxStatus{}, nil
	}
}

func (c *ctxContainer) Logs(_ context.Context, stdout, stderr io.Writer) error {
	for _, f := range []struct {
		name string
		w    io.Writer
	}{{"stdout", stdout}, {"stderr", stderr}} {
		b, err := os.ReadFile(filepath.Join(c.dir, f.name))
		if err != nil {
			return fmt.Errorf("ctxdriver: logs: %w", orchestra.ErrContainerNotFound)
		}
		if _, err := f.w.Write(b); err != nil {
			return err
		}
	}
	return nil
}

// FollowLogs tails both files until the task exits, then writes the rest.
func (c *ctxContainer) FollowLogs(ctx context.Context, stdout, stderr io.Writer) error {
	var off [2]int64
	copyNew := func() error {
		for i, f := range []struct {
			name string
			w    io.Writer
		}{{"stdout", stdout}, {"stderr", stderr}} {
			file, err := os.Open(filepath.Join(c.dir, f.name))
			if err != nil {
				return fmt.Errorf("ctxdriver: follow: %w", orchestra.ErrContainerNotFound)
			}
			n, err := io.Copy(f.w, io.NewSectionReader(file, off[i], 1<<62))
			file.Close()
			off[i] += n
			if err != nil {
				return err
			}
		}
		return nil
	}
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-c.done:
			return copyNew()
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
			if err := copyNew(); err != nil {
				return err
			}
		}
	}
}

func (c *ctxContainer) Cleanup(context.Context) error {
	c.kill()
	c.driver.mu.Lock()
	if c.driver.containers[c.id] == c {
		delete(c.driver.containers, c.id)
	}
	c.driver.mu.Unlock()
	return os.RemoveAll(c.dir)
}

type ctxVolume struct{ name, dir string }

func (v *ctxVolume) Name() string                  { return v.name }
func (v *ctxVolume) Cleanup(context.Context) error { return os.RemoveAll(v.dir) }

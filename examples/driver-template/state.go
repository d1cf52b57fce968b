package mydriver

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/jtarchie/pocketci/orchestra"
)

// A task's state lives in its directory, so that any instance of the
// namespace, in this process or after the plugin restarted, knows it:
//
//	lock         flock(2)ed by the instance that started the task while it
//	             runs; the kernel drops the lock if that process dies
//	pid          "<pid> <start time>" of the task's PID 1, to kill it
//	exit         the exit code, once done
//	stdin-error  why the task was killed, when the caller's stdin failed
//
// Files are written under a temporary name and renamed into place, so a
// reader sees all of one or nothing.

// lostExitCode is the exit code of a task whose starting process died
// before it: the task died too (Pdeathsig SIGKILL).
const lostExitCode = 128 + int(syscall.SIGKILL)

// taskDir is the directory of task id.
func (d *Driver) taskDir(id string) string {
	return filepath.Join(d.dir, "tasks", orchestra.SafeName(orchestra.PathNameRule, id))
}

// findLocked returns the container of id, if this instance knows it or the
// namespace's directory holds it. d.mu is held.
func (d *Driver) findLocked(id string) *Container {
	if c, ok := d.containers[id]; ok {
		return c
	}
	c := d.openTask(id, d.taskDir(id))
	if c != nil {
		d.containers[id] = c
	}
	return c
}

// openTask returns a handle on the task in dir that another instance
// started, or nil when dir holds no task. Its state is read from disk by
// poll.
func (d *Driver) openTask(id, dir string) *Container {
	if _, err := os.Stat(filepath.Join(dir, "lock")); err != nil {
		return nil
	}
	return &Container{driver: d, id: id, dir: dir, done: make(chan struct{})}
}

// poll reads the state of a task another instance started and marks it
// done when it is. A task whose lock nobody holds and that has no exit code
// died with the process that started it. When the task's directory is gone
// (another instance removed it), the error wraps
// orchestra.ErrContainerNotFound.
func (c *Container) poll() error {
	if c.cmd != nil {
		return nil // this instance started it: wait marks it done
	}
	select {
	case <-c.done:
		return nil
	default:
	}
	if code, ok := readExit(c.dir); ok {
		c.finish(code)
		return nil
	}
	f, err := os.Open(filepath.Join(c.dir, "lock"))
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("%s: task %q was removed: %w", Name, c.id, orchestra.ErrContainerNotFound)
	}
	if err != nil {
		return fmt.Errorf("%s: task %q: %w", Name, c.id, err)
	}
	defer f.Close() // releases the lock taken below
	err = syscall.Flock(int(f.Fd()), syscall.LOCK_SH|syscall.LOCK_NB)
	if errors.Is(err, syscall.EWOULDBLOCK) {
		return nil // running
	}
	if err != nil {
		return fmt.Errorf("%s: task %q: look at its lock: %w", Name, c.id, err)
	}
	// The starter writes the exit code before it lets go of the lock.
	if code, ok := readExit(c.dir); ok {
		c.finish(code)
		return nil
	}
	c.driver.logger.Warn("task died with the process that started it", "task", c.id, "exit_code", lostExitCode)
	if err := writeExit(c.dir, lostExitCode); err != nil {
		c.driver.logger.Warn("record exit code", "task", c.id, "err", err)
	}
	c.finish(lostExitCode)
	return nil
}

// createLock creates dir/lock and locks it (exclusively) for as long as the
// returned file is open.
func createLock(dir string) (*os.File, error) {
	f, err := os.Create(filepath.Join(dir, "lock"))
	if err != nil {
		return nil, fmt.Errorf("create lock file: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock the task: %w", err)
	}
	return f, nil
}

// writeFileAtomic writes dir/name under a temporary name and renames it
// into place.
func writeFileAtomic(dir, name, content string) error {
	f, err := os.CreateTemp(dir, "."+name+"-")
	if err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	_, err = f.WriteString(content)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), filepath.Join(dir, name))
	}
	if err != nil {
		_ = os.Remove(f.Name())
		return fmt.Errorf("write %s: %w", name, err)
	}
	return nil
}

// writeExit records the task's exit code.
func writeExit(dir string, code int) error {
	return writeFileAtomic(dir, "exit", strconv.Itoa(code)+"\n")
}

// readExit returns the recorded exit code, if there is one.
func readExit(dir string) (int, bool) {
	b, err := os.ReadFile(filepath.Join(dir, "exit"))
	if err != nil {
		return 0, false
	}
	code, err := strconv.Atoi(strings.TrimSpace(string(b)))
	return code, err == nil
}

// writeStdinError records why the task was killed: its stdin failed.
func writeStdinError(dir string, cause error) error {
	return writeFileAtomic(dir, "stdin-error", cause.Error())
}

// readStdinError returns the recorded stdin failure, if there is one.
func readStdinError(dir string) (string, bool) {
	b, err := os.ReadFile(filepath.Join(dir, "stdin-error"))
	return string(b), err == nil
}

// writePID records the pid of the task's PID 1 with the time it started,
// which tells it from a later process given the same pid.
func writePID(dir string, pid int) error {
	start, err := procStartTime(pid)
	if err != nil {
		return err
	}
	return writeFileAtomic(dir, "pid", fmt.Sprintf("%d %s\n", pid, start))
}

// killRecorded sends SIGKILL to the PID 1 recorded in dir/pid, if it is
// still that process. Nothing recorded (not started yet, or done) is no
// error.
func killRecorded(dir string) error {
	b, err := os.ReadFile(filepath.Join(dir, "pid"))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read pid: %w", err)
	}
	var pid int
	var start string
	if _, err := fmt.Sscan(string(b), &pid, &start); err != nil {
		return fmt.Errorf("read pid: %w", err)
	}
	// FindProcess holds the process by a pidfd from here on: if it is the
	// one that started at start, the signal cannot reach another.
	p, err := os.FindProcess(pid)
	if err != nil {
		return nil
	}
	defer p.Release()
	if now, err := procStartTime(pid); err != nil || now != start {
		return nil // gone, or the pid is another process's now
	}
	if err := p.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("kill pid %d: %w", pid, err)
	}
	return nil
}

// procStartTime is field 22 of /proc/<pid>/stat: when the process started,
// in clock ticks after boot.
func procStartTime(pid int) (string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", fmt.Errorf("read start time: %w", err)
	}
	// The command name (field 2) is in parentheses and may hold spaces.
	i := strings.LastIndexByte(string(b), ')')
	fields := strings.Fields(string(b[i+1:]))
	if i < 0 || len(fields) < 20 {
		return "", fmt.Errorf("read start time: /proc/%d/stat is short", pid)
	}
	return fields[19], nil
}

// removeDir removes the task's directory: renamed away first, so that no
// instance sees it half removed.
func (c *Container) removeDir() error {
	if _, err := os.Lstat(c.dir); errors.Is(err, os.ErrNotExist) {
		return nil // removed already, maybe with the whole namespace
	}
	gone, err := os.MkdirTemp(filepath.Dir(c.dir), ".gone-")
	if err != nil {
		return fmt.Errorf("remove directory: %w", err)
	}
	// Into the new directory: os.Rename does not replace a directory.
	if err := os.Rename(c.dir, filepath.Join(gone, "task")); err != nil && !errors.Is(err, os.ErrNotExist) {
		_ = os.Remove(gone)
		return fmt.Errorf("remove directory: %w", err)
	}
	if err := os.RemoveAll(gone); err != nil {
		return fmt.Errorf("remove directory: %w", err)
	}
	return nil
}

package qemu

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jtarchie/pocketci/orchestra"
)

// A task's directory in the namespace's directory (tasks/<name>) is its
// state for every driver instance of the namespace, in this process or
// another:
//
//	lock    flock(2)ed by the instance that runs the task, for as long as
//	        the task runs (the lock dies with that instance's process, as
//	        the VM does through Pdeathsig)
//	exit    the exit code, written by that instance before it unlocks
//	kill    made by another instance to ask the owner to kill the task
//	stdout, stderr, stdin.N, work/   as the guest daemon uses them
//
// The directory is claimed whole: made under a temporary name with its
// lock taken, then renamed into place, so whoever sees tasks/<name> sees
// it locked or finished.
const (
	lockFile = "lock"
	exitFile = "exit"
	killFile = "kill"
	// killPoll is how often the owner of a running task looks for a kill
	// request; attachedPoll how often an attached container waits on disk.
	killPoll     = 100 * time.Millisecond
	attachedPoll = 20 * time.Millisecond
	// attachedCleanupWait bounds how long an attached Cleanup waits for the
	// owner to kill the task.
	attachedCleanupWait = 15 * time.Second
)

// errTaken means the task's directory exists: another instance ran it.
var errTaken = errors.New("the task already ran in another driver instance of the namespace")

// taskDirName is the directory name of a task (also its name in the guest).
func taskDirName(namespace, taskID string) string {
	return orchestra.SafeName(orchestra.PathNameRule, namespace, taskID)
}

// claim makes the task's directory with its lock held, or returns errTaken
// when it exists.
func (c *Container) claim() error {
	tasks := filepath.Dir(c.hostDir)
	if err := c.driver.makeShare(); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(tasks, ".new-")
	if err != nil {
		return fmt.Errorf("create task directory: %w", err)
	}
	// MkdirTemp makes it 0700: a task's user must reach its work directory.
	if err := os.Chmod(tmp, 0o755); err != nil {
		_ = os.RemoveAll(tmp)
		return fmt.Errorf("create task directory: %w", err)
	}
	lock, err := os.OpenFile(filepath.Join(tmp, lockFile), os.O_CREATE|os.O_RDWR, 0o644)
	if err == nil {
		err = syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	}
	if err == nil {
		err = os.Rename(tmp, c.hostDir)
		if errors.Is(err, syscall.ENOTEMPTY) || errors.Is(err, os.ErrExist) {
			err = errTaken
		}
	}
	if err != nil {
		if lock != nil {
			_ = lock.Close()
		}
		_ = os.RemoveAll(tmp)
		if errors.Is(err, errTaken) {
			return err
		}
		return fmt.Errorf("claim task directory: %w", err)
	}
	c.lock = lock
	return nil
}

// unlock releases the task's lock (idempotent).
func (c *Container) unlock() {
	c.mu.Lock()
	lock := c.lock
	c.lock = nil
	c.mu.Unlock()
	if lock != nil {
		_ = lock.Close()
	}
}

// recordExit writes the exit code for the other instances, then unlocks.
func (c *Container) recordExit(code int) {
	tmp := filepath.Join(c.hostDir, exitFile+".tmp")
	err := os.WriteFile(tmp, []byte(strconv.Itoa(code)), 0o644)
	if err == nil {
		err = os.Rename(tmp, filepath.Join(c.hostDir, exitFile))
	}
	if err != nil && !errors.Is(err, os.ErrNotExist) { // a removed directory has nobody to tell
		c.driver.logger.Warn("qemu: record the task's exit code", "task", c.task.ID, "err", err)
	}
	c.unlock()
}

// lockHeld reports whether an instance holds the lock of the task in dir.
func lockHeld(dir string) bool {
	f, err := os.Open(filepath.Join(dir, lockFile))
	if err != nil {
		return false
	}
	defer f.Close()
	return errors.Is(syscall.Flock(int(f.Fd()), syscall.LOCK_SH|syscall.LOCK_NB), syscall.EWOULDBLOCK)
}

// readExit reads the exit code the task's owner recorded.
func readExit(dir string) (int, bool) {
	data, err := os.ReadFile(filepath.Join(dir, exitFile))
	if err != nil {
		return 0, false
	}
	code, err := strconv.Atoi(strings.TrimSpace(string(data)))
	return code, err == nil
}

// requestKill asks the task's owner to kill it.
func requestKill(dir string) error {
	return os.WriteFile(filepath.Join(dir, killFile), nil, 0o644)
}

// attach returns a container for a task another instance started, read
// from its directory.
func (d *Driver) attach(taskID, dir string) *Container {
	return &Container{
		driver: d, attached: true, task: orchestra.Task{ID: taskID},
		name: filepath.Base(dir), hostDir: dir,
		started: closedChan(), stdinStop: make(chan struct{}), doneCh: make(chan struct{}),
	}
}

func closedChan() chan struct{} {
	ch := make(chan struct{})
	close(ch)
	return ch
}

// refresh reads an attached task's state from its directory: done once its
// exit code is recorded, or once nobody holds its lock (the instance that
// ran it is gone, and its VM with it: 137, as for a VM that was stopped).
func (c *Container) refresh() error {
	c.mu.Lock()
	done := c.done
	c.mu.Unlock()
	if done {
		return nil
	}
	code, ok := readExit(c.hostDir)
	if !ok {
		if _, err := os.Stat(c.hostDir); err != nil {
			return fmt.Errorf("task %q: %w (its files are gone: %w)", c.task.ID, orchestra.ErrContainerNotFound, err)
		}
		if lockHeld(c.hostDir) {
			return nil
		}
		if code, ok = readExit(c.hostDir); !ok { // it may have finished meanwhile
			code = 137
			c.driver.logger.Warn("qemu: the driver instance that ran the task is gone without its exit code; reporting 137", "task", c.task.ID)
		}
	}
	c.mu.Lock()
	if !c.done {
		c.done, c.exitCode = true, code
		close(c.doneCh)
	}
	c.mu.Unlock()
	return nil
}

// watchKillRequest kills the task (run by this instance) when another
// instance asks for it, until the task is done.
func (c *Container) watchKillRequest() {
	t := time.NewTicker(killPoll)
	defer t.Stop()
	for {
		select {
		case <-c.doneCh:
			return
		case <-t.C:
		}
		if _, err := os.Stat(filepath.Join(c.hostDir, killFile)); err == nil {
			c.driver.logger.Debug("qemu: another instance asked to kill the task", "task", c.task.ID)
			if c.vm.alive() {
				c.kill(context.Background())
			}
			return
		}
	}
}

// cleanupAttached stops a task another instance runs (through a kill
// request, waiting until it ended) and removes its files.
func (c *Container) cleanupAttached(ctx context.Context) error {
	if err := c.refresh(); err != nil && !errors.Is(err, orchestra.ErrContainerNotFound) {
		return err
	}
	c.mu.Lock()
	done := c.done
	c.mu.Unlock()
	if !done && lockHeld(c.hostDir) {
		if err := requestKill(c.hostDir); err != nil {
			return fmt.Errorf("cleanup of task %q: ask its instance to kill it: %w", c.task.ID, err)
		}
		wait, cancel := context.WithTimeout(ctx, attachedCleanupWait)
		defer cancel()
		for lockHeld(c.hostDir) && wait.Err() == nil {
			select {
			case <-wait.Done():
			case <-time.After(attachedPoll):
			}
		}
		if lockHeld(c.hostDir) {
			c.driver.logger.Warn("qemu: the instance running the task did not kill it in time; removing its files anyway", "task", c.task.ID)
		}
		_ = c.refresh()
	}
	if err := removeAllRetry(c.hostDir); err != nil {
		return fmt.Errorf("cleanup of task %q: %w", c.task.ID, err)
	}
	return nil
}

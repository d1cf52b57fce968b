//go:build linux

package native

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jtarchie/pocketci/orchestra"
	"github.com/jtarchie/pocketci/plugins/native/internal/shim"
)

// followInterval is how often Logs with follow looks for new output, and how
// often a container attached to another instance's task looks at its lock.
const followInterval = 20 * time.Millisecond

// killWait bounds how long Cleanup and Close wait for a killed task.
const killWait = 10 * time.Second

// Container is a task running, or done, as a local process tree below its
// shim. It implements orchestra.Container.
type Container struct {
	driver *Driver
	id     string
	dir    string // <root>/<namespace>/tasks/<task>: lock, pid, logs, exit and work/

	// Set for a task this instance started; nil for one found on disk or
	// run by another instance.
	cmd  *exec.Cmd
	pid  int      // the shim's pid, which is also its process group id
	lock *os.File // the task lock, held until the exit file is written

	done     chan struct{} // closed once the task is over
	gone     chan struct{} // closed once its shim was reaped too (after done)
	exitCode int           // valid once done is closed
	failure  string        // why the driver failed the task; valid once done

	mu        sync.Mutex // guards reaped, removed, stopFail and the kill-vs-reap race
	reaped    bool
	removed   bool
	stdinFail string // set by feedStdin before it kills the task

	stdinOnce sync.Once
	stdinW    *os.File
	killOnce  sync.Once
	killW     *os.File      // closing it makes the shim kill the task's tree
	stopWatch chan struct{} // closes the watcher of an attached container
}

var _ orchestra.Container = (*Container)(nil)

func newContainer(d *Driver, id, dir string) *Container {
	return &Container{driver: d, id: id, dir: dir, done: make(chan struct{}), gone: make(chan struct{})}
}

// ID is the task's ID: Driver.GetContainer of any driver instance of the
// namespace, also after a restart, finds the container with it.
func (c *Container) ID() string { return c.id }

// status is a snapshot of a container's state.
type status struct {
	done     bool
	exitCode int
}

// IsDone reports whether the task finished.
func (s status) IsDone() bool { return s.done }

// ExitCode is the task's exit code, 128+N when killed by signal N.
func (s status) ExitCode() int { return s.exitCode }

// feedStdin copies r into the task's stdin and closes it at the end. When r
// fails, the task is killed before its stdin is closed, so it never reads a
// clean end of a truncated input, and it ends failed with the reason.
func (c *Container) feedStdin(r io.Reader) {
	_, err := io.Copy(c.stdinW, r)
	if err != nil && !errors.Is(err, syscall.EPIPE) && !errors.Is(err, os.ErrClosed) {
		c.mu.Lock()
		if !c.reaped {
			c.stdinFail = fmt.Sprintf("stdin: reading the caller's input failed: %v", err)
		}
		c.mu.Unlock()
		c.driver.logger.Warn("task stdin failed; killing the task", "task", c.id, "err", err)
		c.kill()
		<-c.done
	}
	c.closeStdin()
}

func (c *Container) closeStdin() {
	if c.stdinW != nil {
		c.stdinOnce.Do(func() { _ = c.stdinW.Close() })
	}
}

// reap reads the shim's report and finishes the task, then reaps the shim
// and kills what may be left of its process group (a shim killed with
// SIGKILL could not do it).
//
// The shim reports only once every process of the task was reaped and all
// output was copied, so the task is done (done closed) on the report; the
// shim's own exit, which can take milliseconds more, is awaited after that
// (gone closed), and Cleanup and Close wait for it.
func (c *Container) reap(ctl *os.File) {
	r := bufio.NewReader(ctl)
	line, _ := r.ReadString('\n')
	if pid, ok := strings.CutPrefix(strings.TrimSpace(line), "pid "); ok {
		// The main process: what another instance kills to stop the task.
		if n, err := strconv.Atoi(pid); err == nil {
			if err := writePidFile(c.dir, n); err != nil {
				c.driver.logger.Warn("record task pid", "task", c.id, "err", err)
			}
		}
		line, _ = r.ReadString('\n')
	}
	_ = ctl.Close()
	reported := false
	if s, rest, _ := strings.Cut(strings.TrimSpace(line), " "); s != "" {
		if n, err := strconv.Atoi(s); err == nil {
			reported = true
			c.finish(n, rest)
		}
	}

	if err := waitExited(c.pid); err != nil {
		c.driver.logger.Warn("wait for task", "task", c.id, "err", err)
	}
	c.mu.Lock()
	// The shim is a zombie (not reaped yet), so its pid, which is the
	// group's id, cannot have been reused.
	_ = syscall.Kill(-c.pid, syscall.SIGKILL)
	// Reap it directly: exec.Cmd.Wait waits for the pidfd through the
	// runtime's poller, which added milliseconds per task under load. The
	// driver gave the shim only files of its own, so Wait has nothing else
	// to do; Release drops the pidfd.
	var ws syscall.WaitStatus
	var err error
	for {
		if _, err = syscall.Wait4(c.pid, &ws, 0, nil); !errors.Is(err, syscall.EINTR) {
			break
		}
	}
	_ = c.cmd.Process.Release()
	c.reaped = true
	c.mu.Unlock()
	c.closeStdin()
	if !waitGroupGone(c.pid, killWait) {
		c.driver.logger.Warn("processes of the task survive SIGKILL", "task", c.id, "pgid", c.pid)
	}
	if err != nil {
		c.driver.logger.Warn("wait for task", "task", c.id, "err", err)
	}
	if !reported { // the shim died without a report
		code := -1
		if err == nil {
			code = shim.ExitCode(ws)
		}
		c.finish(code, "the task's shim died without reporting")
	}
	c.closeKill()
	close(c.gone)
}

// finish records the task's end: its exit code and the reason when the
// driver failed it (never exit 0 then), on disk too, releases this
// instance's hold of the task lock, and closes done.
func (c *Container) finish(code int, failure string) {
	c.mu.Lock()
	if failure == "" {
		failure = c.stdinFail
	}
	c.mu.Unlock()
	if failure != "" && code == 0 {
		code = 1
	}
	c.exitCode, c.failure = code, failure
	if failure != "" {
		c.driver.logger.Error("task failed", "task", c.id, "exit_code", code, "reason", failure)
	}
	if err := writeExitFile(c.dir, code, failure); err != nil {
		c.driver.logger.Warn("record exit code", "task", c.id, "err", err)
	}
	_ = c.lock.Close()
	close(c.done)
	c.driver.logger.Debug("task done", "task", c.id, "exit_code", code)
}

// kill asks the task's shim to kill the whole tree: it closes the kill
// pipe. A task run by another instance is stopped by killing its main
// process (recorded pid, start time checked); its shim then kills the rest.
func (c *Container) kill() {
	if c.cmd == nil {
		select {
		case <-c.done:
		default:
			terminateRecorded(c.dir)
		}
		return
	}
	c.closeKill()
}

func (c *Container) closeKill() {
	if c.killW != nil {
		c.killOnce.Do(func() { _ = c.killW.Close() })
	}
}

// killHard sends SIGKILL to the shim's process group: the fallback when the
// shim does not end after its kill pipe closed.
func (c *Container) killHard() {
	if c.cmd == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.reaped {
		_ = syscall.Kill(-c.pid, syscall.SIGKILL)
	}
}

// Status reports whether the task finished and its exit code. A task the
// driver failed (its stdin reader failed, its output could not be written)
// has a non-zero exit code, and Logs says why.
func (c *Container) Status(_ context.Context) (orchestra.ContainerStatus, error) {
	select {
	case <-c.done:
		return status{done: true, exitCode: c.exitCode}, nil
	default:
		return status{}, nil
	}
}

// failed is the error Logs returns after the output of a
// task the driver failed.
func (c *Container) failed() error {
	select {
	case <-c.done:
		if c.failure != "" {
			return fmt.Errorf("native: task %q failed (exit code %d): %s", c.id, c.exitCode, c.failure)
		}
	default:
	}
	return nil
}

// Logs writes the task's output from the start to stdout and stderr.
// Without follow it writes what there is now; with follow it goes on as the
// task writes and returns once the task is over and all its output was
// written, or when ctx ends. For a task the driver failed it then returns
// an error with the reason.
func (c *Container) Logs(ctx context.Context, stdout, stderr io.Writer, follow bool) error {
	if follow {
		return c.follow(ctx, stdout, stderr)
	}
	if err := copyFile(ctx, filepath.Join(c.dir, "stdout"), stdout); err != nil {
		return fmt.Errorf("native: task %q: stdout: %w", c.id, err)
	}
	if err := copyFile(ctx, filepath.Join(c.dir, "stderr"), stderr); err != nil {
		return fmt.Errorf("native: task %q: stderr: %w", c.id, err)
	}
	return c.failed()
}

func copyFile(ctx context.Context, path string, w io.Writer) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	f, err := openLog(filepath.Dir(path), filepath.Base(path))
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(w, f)
	return err
}

// openLog opens the log file name of the task directory dir. A file that
// is gone (the container was removed) is ErrContainerNotFound.
func openLog(dir, name string) (*os.File, error) {
	f, err := os.Open(filepath.Join(dir, name))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("log file is gone (container removed): %w", orchestra.ErrContainerNotFound)
	}
	return f, err
}

// follow writes the task's output from the start as it is produced and
// returns once the task is over and all its output was written, or when
// ctx ends.
func (c *Container) follow(ctx context.Context, stdout, stderr io.Writer) error {
	outF, err := openLog(c.dir, "stdout")
	if err != nil {
		return fmt.Errorf("native: task %q: follow stdout: %w", c.id, err)
	}
	defer outF.Close()
	errF, err := openLog(c.dir, "stderr")
	if err != nil {
		return fmt.Errorf("native: task %q: follow stderr: %w", c.id, err)
	}
	defer errF.Close()

	ticker := time.NewTicker(followInterval)
	defer ticker.Stop()
	for {
		// Look at done before draining: whatever was written before the
		// end is in the files by then.
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

// Cleanup kills the task's tree if it still runs, waits for it and removes
// the task's directory. It is idempotent.
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
	soft := time.NewTimer(killWait / 4)
	defer soft.Stop()
	again := time.NewTicker(followInterval) // another instance's task: its pid may be recorded late
	defer again.Stop()
	hard := time.NewTimer(killWait)
	defer hard.Stop()
wait:
	for {
		select {
		case <-c.gone:
			break wait
		case <-ctx.Done():
			return fmt.Errorf("native: task %q: wait for the killed task: %w", c.id, ctx.Err())
		case <-again.C:
			if c.cmd == nil {
				c.kill()
			}
		case <-soft.C:
			if c.cmd != nil {
				c.driver.logger.Warn("task shim did not end after its kill pipe closed; killing its process group", "task", c.id, "pid", c.pid)
				c.killHard()
			}
		case <-hard.C:
			return fmt.Errorf("native: task %q: still running %s after it was killed", c.id, killWait)
		}
	}
	if c.stopWatch != nil {
		c.stopOnce()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.removed {
		return nil
	}
	if err := removeTaskDir(c.dir); err != nil {
		return fmt.Errorf("native: task %q: remove directory: %w", c.id, err)
	}
	c.removed = true
	return nil
}

// removeTaskDir renames dir out of the way before it deletes it, so that a
// driver instance that starts the same ID meanwhile gets a fresh directory
// and lock instead of losing its files to this removal.
func removeTaskDir(dir string) error {
	gone := filepath.Join(filepath.Dir(dir), fmt.Sprintf(".gone-%d-%d", os.Getpid(), time.Now().UnixNano()))
	if err := os.Rename(dir, gone); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return err
	}
	return os.RemoveAll(gone)
}

// exitFile is the file in a task's directory that holds its exit code (and
// the reason when the driver failed it) once it is done, so that another
// driver instance of the namespace finds it.
const exitFile = "exit"

// writeExitFile records code and failure in dir atomically.
func writeExitFile(dir string, code int, failure string) error {
	tmp := filepath.Join(dir, exitFile+".tmp")
	line := strconv.Itoa(code)
	if failure != "" {
		line += " " + failure
	}
	if err := os.WriteFile(tmp, []byte(line+"\n"), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, exitFile))
}

// readExitFile reads what writeExitFile wrote.
func readExitFile(dir string) (code int, failure string, ok bool) {
	b, err := os.ReadFile(filepath.Join(dir, exitFile))
	if err != nil {
		return 0, "", false
	}
	s, rest, _ := strings.Cut(strings.TrimSpace(string(b)), " ")
	code, err = strconv.Atoi(s)
	return code, rest, err == nil
}

// recover returns the finished container of id that an earlier driver
// instance of the namespace, or another one, left on disk: its exit file is
// written once the task is over.
func (d *Driver) recover(id, dir string) (*Container, bool) {
	code, failure, ok := readExitFile(dir)
	if !ok {
		return nil, false
	}
	c := newContainer(d, id, dir)
	c.exitCode, c.failure, c.reaped = code, failure, true
	close(c.done)
	close(c.gone)
	d.logger.Debug("task recovered from disk", "task", id, "exit_code", code)
	return c, true
}

// attach returns a container for a task that another driver instance runs:
// it is done when the task lock is released, with the exit code the other
// instance recorded.
func (d *Driver) attach(id, dir string) *Container {
	c := newContainer(d, id, dir)
	c.stopWatch = make(chan struct{})
	go func() {
		ticker := time.NewTicker(followInterval)
		defer ticker.Stop()
		for lockHeld(dir) {
			select {
			case <-c.stopWatch:
			case <-ticker.C:
				continue
			}
			break
		}
		code, failure, ok := readExitFile(dir)
		if !ok {
			code, failure = 137, "the driver instance that ran the task died before it finished"
		}
		c.exitCode, c.failure = code, failure
		close(c.done)
		close(c.gone)
	}()
	return c
}

func (c *Container) stopOnce() {
	c.mu.Lock()
	defer c.mu.Unlock()
	select {
	case <-c.stopWatch:
	default:
		close(c.stopWatch)
	}
}

package qemu

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jtarchie/pocketci/orchestra"
	"github.com/jtarchie/pocketci/plugins/qemu/guestproto"
)

const (
	// defaultPath is the PATH a task gets when its Env has none.
	defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	// stdinChunk is the size of one stdin chunk file; stdinAhead is how many
	// chunks the host writes before the guest consumed them. Together they
	// bound the disk (and nothing is held in memory but one copy buffer).
	stdinChunk = 2 << 20
	stdinAhead = 4
	// pollFast is how often the driver's own guest-exec steps are polled.
	pollFast = 5 * time.Millisecond
	// followInterval is how often Logs with follow looks for new output.
	followInterval = 20 * time.Millisecond
)

// Container is one task running (or done) in the VM, or, attached, a task
// another driver instance of the namespace started (see taskdir.go).
type Container struct {
	driver   *Driver
	vm       *vm      // nil when attached
	attached bool     // started by another instance: state from its directory
	lock     *os.File // the task's lock while it runs here (under mu)
	// replacement is the attached container RunContainer returned instead
	// of this one, when another instance claimed the task first.
	replacement *Container
	task        orchestra.Task
	image       *image   // nil: the guest's own userland
	sandbox     *Sandbox // a command Exec'd in a sandbox, else nil
	name        string
	hostDir     string // <share>/tasks/<name>
	guestDir    string

	started  chan struct{} // closed when start finished
	startErr error

	stdinStop chan struct{}
	stdinOnce sync.Once

	slot int // the guest slot (its cgroup) while it runs; see Driver.takeSlot

	mu       sync.Mutex
	stdinErr error  // the caller's stdin failed: the task was stopped
	id       uint64 // the guest daemon's handle, once started
	done     bool
	exitCode int
	doneCh   chan struct{}
	cleaned  bool
}

var _ orchestra.Container = (*Container)(nil)

func newContainer(d *Driver, v *vm, task orchestra.Task) *Container {
	name := taskDirName(d.namespace, task.ID)
	return &Container{
		driver: d, vm: v, task: task, name: name,
		hostDir:   filepath.Join(d.share, "tasks", name),
		guestDir:  guestShare + "/tasks/" + name,
		started:   make(chan struct{}),
		stdinStop: make(chan struct{}),
		doneCh:    make(chan struct{}),
	}
}

// waitStarted returns c once its start finished, or the start's error.
func (c *Container) waitStarted(ctx context.Context) (orchestra.Container, error) {
	select {
	case <-c.started:
	case <-ctx.Done():
		return nil, fmt.Errorf("task %q: waiting for its start: %w", c.task.ID, ctx.Err())
	}
	if c.startErr != nil {
		return nil, fmt.Errorf("task %q: %w", c.task.ID, c.startErr)
	}
	if c.replacement != nil {
		return c.replacement, nil
	}
	return c, nil
}

// ID is the task's ID: GetContainer of any instance of the namespace finds
// the container by it.
func (c *Container) ID() string { return c.task.ID }

func (c *Container) finishStart(err error) {
	c.startErr = err
	close(c.started)
}

// start prepares the task's directory (working dir, output files, stdin)
// and starts the task in the guest daemon, which reports its end to
// c.exited.
func (c *Container) start(ctx context.Context) error {
	d := c.driver
	if err := os.MkdirAll(filepath.Join(c.hostDir, "work"), 0o755); err != nil {
		return fmt.Errorf("create task directory: %w", err)
	}
	if c.task.Image != "" && c.image == nil {
		im, err := resolveImage(ctx, c.vm.images, c.task.Image, d.logger)
		if err != nil {
			return err
		}
		c.image = im
	}
	for _, f := range []string{"stdout", "stderr"} {
		if err := os.WriteFile(filepath.Join(c.hostDir, f), nil, 0o644); err != nil {
			return fmt.Errorf("create %s file: %w", f, err)
		}
	}
	start, err := c.startMessage()
	if err != nil {
		return err
	}
	id, err := c.vm.guestd.start(start, func(ev guestproto.Event, lost error) {
		defer d.bg.Done() // Close waits for every task's end
		c.exited(ev, lost)
	})
	if err != nil {
		return fmt.Errorf("start the task in the guest: %w", err)
	}
	c.mu.Lock()
	c.id = id
	c.mu.Unlock()
	if c.task.Stdin != nil {
		// Not waited for by Close: a Read on task.Stdin may block forever.
		// The feeder ends at the next chunk once the task is done.
		go c.feedStdin()
	}
	d.logger.Debug("qemu: task started", "task", c.task.ID, "id", id, "user", c.task.User, "image", c.task.Image)
	return nil
}

// startMessage is what the guest daemon gets: argv, env, user, limits, the
// working directory and the volumes bound for the task. Without an image
// the default working directory is the task's work directory on the share
// and every mount is bound at ./<path> there; in an image it is the image's
// WorkingDir ("/" when unset) and mounts are placed by orchestra.MountPath.
// WorkDir is orchestra.WorkingDir of that default.
func (c *Container) startMessage() (*guestproto.Start, error) {
	start := &guestproto.Start{Dir: c.guestDir, Slot: c.slot, User: c.task.User, Privileged: c.task.Privileged,
		Stdin: c.task.Stdin != nil, Argv: c.task.Command}
	vars, defaultDir := c.task.Env, c.guestDir+"/work"
	if c.sandbox != nil {
		start.Sandbox, defaultDir = c.sandbox.name, c.sandbox.guestDir+"/work"
	}
	if c.image != nil {
		vars = c.image.env(c.task.Env)
		start.Root, defaultDir = c.image.guestRoot(), c.image.config.WorkingDir
		if defaultDir == "" {
			defaultDir = "/"
		}
	}
	start.WorkDir = orchestra.WorkingDir(defaultDir, c.task)
	for _, m := range c.task.Mounts {
		vol, err := c.driver.volume(m.Name)
		if err != nil {
			return nil, err
		}
		dst := orchestra.MountPath(defaultDir, m.Path)
		if c.image == nil {
			dst = defaultDir + "/" + mountRel(m.Path)
		}
		start.Binds = append(start.Binds, guestproto.Bind{Src: vol.guestDir, Dst: dst})
	}
	// Outer mounts first, so an inner one is bound inside the outer volume.
	sort.SliceStable(start.Binds, func(i, j int) bool {
		return strings.Count(start.Binds[i].Dst, "/") < strings.Count(start.Binds[j].Dst, "/")
	})
	for k, v := range vars {
		start.Env = append(start.Env, k+"="+v)
	}
	if _, ok := vars["PATH"]; !ok {
		start.Env = append(start.Env, "PATH="+defaultPath)
	}
	sort.Strings(start.Env)
	lim := c.task.ContainerLimits
	start.Memory, start.CPUWeight = lim.Memory, cpuWeight(lim.CPU)
	return start, nil
}

// exited is the guest daemon's report of the task's end, or of why there
// will be none.
func (c *Container) exited(ev guestproto.Event, lost error) {
	switch {
	case lost == nil:
		if ev.Error != "" {
			c.driver.logger.Debug("qemu: task did not start", "task", c.task.ID, "err", ev.Error)
		}
		c.finish(ev.Code)
	case !errors.Is(lost, errGuestdRestarted) && c.vm.waitExit(2*time.Second):
		c.finish(137) // the VM was stopped: the task was killed with it
	default:
		c.driver.logger.Error("qemu: task status lost", "task", c.task.ID, "err", lost, "console", tailFile(c.vm.consolePath(), 10))
		c.finish(255)
	}
}

func (c *Container) finish(code int) {
	c.mu.Lock()
	first := !c.done
	if first {
		c.done, c.exitCode = true, code
		close(c.doneCh)
	}
	c.mu.Unlock()
	if first {
		c.driver.releaseSlot(c.vm, c.slot)
		c.recordExit(code)
	}
	c.stopStdin()
	c.driver.logger.Debug("qemu: task done", "task", c.task.ID, "exit_code", code)
}

// stopStdin ends the stdin feeder (idempotent).
func (c *Container) stopStdin() { c.stdinOnce.Do(func() { close(c.stdinStop) }) }

// feedStdin copies task.Stdin into chunk files the guest consumes, at most
// stdinAhead chunks ahead of it, and marks the end with stdin.end.
func (c *Container) feedStdin() {
	buf := make([]byte, 64<<10)
	for n := 0; ; n++ {
		// Wait until the guest consumed chunk n-stdinAhead.
		for n >= stdinAhead {
			if _, err := os.Stat(filepath.Join(c.hostDir, "stdin."+strconv.Itoa(n-stdinAhead))); errors.Is(err, os.ErrNotExist) {
				break
			}
			select {
			case <-c.stdinStop:
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
		eof, err := c.writeChunk(n, buf)
		if err != nil {
			select {
			case <-c.stdinStop: // the task ended: nobody reads its stdin
			default:
				c.failStdin(err)
			}
			return
		}
		if eof {
			if err := os.WriteFile(filepath.Join(c.hostDir, "stdin.end"), nil, 0o644); err != nil {
				c.failStdin(fmt.Errorf("mark the end of stdin: %w", err))
			}
			return
		}
	}
}

// failStdin stops a task whose stdin could not be delivered whole. The
// guest never sees an end of input (stdin.end is not written), so the task
// cannot mistake truncated input for all of it: it is killed, exits
// non-zero, and Status reports the stdin error.
func (c *Container) failStdin(err error) {
	c.mu.Lock()
	done := c.done
	if !done {
		c.stdinErr = err
	}
	c.mu.Unlock()
	if done {
		return
	}
	c.driver.logger.Error("qemu: the task's stdin failed, stopping the task", "task", c.task.ID, "err", err)
	if c.vm.alive() {
		c.kill(context.Background())
	}
}

// writeChunk writes chunk n: up to stdinChunk bytes, ending early when the
// reader has nothing more at hand (a short read), so slow producers still
// stream. It reports whether stdin ended.
func (c *Container) writeChunk(n int, buf []byte) (eof bool, err error) {
	final := filepath.Join(c.hostDir, "stdin."+strconv.Itoa(n))
	tmp := final + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return false, fmt.Errorf("create stdin chunk: %w", err)
	}
	written := 0
	for written < stdinChunk {
		select {
		case <-c.stdinStop:
			_ = f.Close()
			_ = os.Remove(tmp)
			return false, errors.New("task finished")
		default:
		}
		k, rerr := c.task.Stdin.Read(buf[:min(len(buf), stdinChunk-written)])
		if k > 0 {
			if _, err := f.Write(buf[:k]); err != nil {
				_ = f.Close()
				return false, fmt.Errorf("write stdin chunk: %w", err)
			}
			written += k
		}
		if rerr == io.EOF {
			eof = true
			break
		}
		if rerr != nil {
			_ = f.Close()
			return false, fmt.Errorf("read task stdin: %w", rerr)
		}
		if k > 0 && k < len(buf) {
			break // a short read: publish what we have
		}
	}
	if err := f.Close(); err != nil {
		return false, fmt.Errorf("close stdin chunk: %w", err)
	}
	if written == 0 {
		return eof, os.Remove(tmp)
	}
	if err := os.Rename(tmp, final); err != nil {
		return false, fmt.Errorf("publish stdin chunk: %w", err)
	}
	return eof, nil
}

// status is a ContainerStatus snapshot.
type status struct {
	done bool
	code int
}

func (s status) IsDone() bool  { return s.done }
func (s status) ExitCode() int { return s.code }

// Status reports the state: for a task of this instance the cached state
// the guest daemon's exit event set (this never talks to the guest and can
// be polled forever); for an attached one, what its directory says.
func (c *Container) Status(ctx context.Context) (orchestra.ContainerStatus, error) {
	if c.attached {
		if err := c.refresh(); err != nil {
			return nil, err
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	st := status{done: c.done, code: c.exitCode}
	if c.done && c.stdinErr != nil {
		return st, fmt.Errorf("task %q was stopped because its stdin failed: %w", c.task.ID, c.stdinErr)
	}
	return st, nil
}

// Logs writes the task's output from the start, read from the host side of
// the share. Without follow it writes what there is now; with follow it
// goes on as the task writes and returns once the task is done and all of
// its output was written, or when ctx ends.
func (c *Container) Logs(ctx context.Context, stdout, stderr io.Writer, follow bool) error {
	type stream struct {
		f *os.File
		w io.Writer
	}
	var streams []stream
	for _, s := range []struct {
		file string
		w    io.Writer
	}{{"stdout", stdout}, {"stderr", stderr}} {
		if s.w == nil {
			continue
		}
		f, err := os.Open(filepath.Join(c.hostDir, s.file))
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("logs of task %q: %w", c.task.ID, orchestra.ErrContainerNotFound)
		}
		if err != nil {
			return fmt.Errorf("logs of task %q: %w", c.task.ID, err)
		}
		defer f.Close()
		streams = append(streams, stream{f, s.w})
	}
	copyAll := func() error {
		for _, s := range streams {
			if _, err := io.Copy(s.w, s.f); err != nil {
				return fmt.Errorf("logs of task %q: %w", c.task.ID, err)
			}
		}
		return nil
	}
	for follow {
		if c.attached {
			if err := c.refresh(); err != nil {
				return err
			}
		}
		select {
		case <-c.doneCh:
			follow = false // the output is complete: one last copy
			continue
		default:
		}
		if err := copyAll(); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("follow logs of task %q: %w", c.task.ID, ctx.Err())
		case <-c.doneCh:
		case <-time.After(followInterval):
		}
	}
	return copyAll()
}

// Cleanup kills the task if it still runs and removes its files. A task
// another instance runs is killed by that instance, on request. It is
// idempotent.
func (c *Container) Cleanup(ctx context.Context) error {
	d := c.driver
	c.mu.Lock()
	if c.cleaned {
		c.mu.Unlock()
		return nil
	}
	c.cleaned = true
	running := !c.done && c.id != 0
	c.mu.Unlock()
	defer func() {
		d.mu.Lock()
		if d.containers[c.task.ID] == c {
			delete(d.containers, c.task.ID)
		}
		d.mu.Unlock()
	}()
	if c.attached {
		return c.cleanupAttached(ctx)
	}
	c.stopStdin()
	if running && c.vm.alive() {
		c.kill(ctx)
	}
	c.removeFiles()
	c.unlock()
	return nil
}

// kill kills the task and everything it started (its cgroup in the
// guest) and waits, bounded, for its end.
func (c *Container) kill(ctx context.Context) {
	c.mu.Lock()
	id := c.id
	c.mu.Unlock()
	if err := c.vm.guestd.kill(id); err != nil {
		c.driver.logger.Warn("qemu: kill task", "task", c.task.ID, "err", err)
	}
	killCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	select {
	case <-c.doneCh:
	case <-killCtx.Done():
		c.driver.logger.Warn("qemu: task did not end after kill", "task", c.task.ID)
	}
}

// cpuWeight turns Docker-style CPU shares (2..262144, 1024 the default)
// into a cgroup v2 cpu.weight (1..10000, 100 the default) the way runc
// does; 0 means no limit.
func cpuWeight(shares int64) int64 {
	if shares <= 0 {
		return 0
	}
	shares = min(max(shares, 2), 262144)
	return 1 + ((shares-2)*9999)/262142
}

// removeFiles deletes the task's directory on the share.
func (c *Container) removeFiles() {
	if err := os.RemoveAll(c.hostDir); err != nil {
		c.driver.logger.Warn("qemu: remove task files", "task", c.task.ID, "err", err)
	}
}

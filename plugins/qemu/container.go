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
	"github.com/jtarchie/pocketci/plugins/qemu/qga"
)

const (
	// defaultPath is the PATH a task gets when its Env has none.
	defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	// stdinChunk is the size of one stdin chunk file; stdinAhead is how many
	// chunks the host writes before the guest consumed them. Together they
	// bound the disk (and nothing is held in memory but one copy buffer).
	stdinChunk = 2 << 20
	stdinAhead = 4
	// pollFast is the status poll interval right after start; it grows to
	// pollSlow for long tasks, so that many tasks do not flood the agent.
	pollFast = 5 * time.Millisecond
	pollSlow = 100 * time.Millisecond
	// followInterval is how often FollowLogs looks for new output.
	followInterval = 20 * time.Millisecond
)

// Container is one task running (or done) in the VM.
type Container struct {
	driver   *Driver
	vm       *vm
	task     orchestra.Task
	image    *image // nil: the guest's own userland
	name     string
	hostDir  string // <share>/tasks/<name>
	guestDir string

	started  chan struct{} // closed when start finished
	startErr error

	stdinStop chan struct{}
	stdinOnce sync.Once

	slot int // the guest slot (FIFOs, cgroup) while it runs; see Driver.takeSlot

	mu       sync.Mutex
	stdinErr error // the caller's stdin failed: the task was stopped
	pid      int
	done     bool
	exitCode int
	doneCh   chan struct{}
	cleaned  bool
}

var (
	_ orchestra.Container   = (*Container)(nil)
	_ orchestra.LogFollower = (*Container)(nil)
)

func newContainer(d *Driver, v *vm, task orchestra.Task) *Container {
	name := orchestra.SafeName(orchestra.PathNameRule, d.namespace, task.ID)
	return &Container{
		driver: d, vm: v, task: task, name: name,
		hostDir:   filepath.Join(v.share, "tasks", name),
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
	return c, nil
}

func (c *Container) finishStart(err error) {
	c.startErr = err
	close(c.started)
}

// start prepares the task's directory (working dir, mount links, output
// files, stdin), launches the guest wrapper with guest-exec and starts the
// status poller.
func (c *Container) start(ctx context.Context) error {
	d := c.driver
	work := filepath.Join(c.hostDir, "work")
	if err := os.MkdirAll(work, 0o755); err != nil {
		return fmt.Errorf("create task directory: %w", err)
	}
	if c.task.Image != "" {
		im, err := resolveImage(ctx, c.task.Image, d.logger)
		if err != nil {
			return err
		}
		c.image = im
	}
	for _, m := range c.task.Mounts {
		if c.image != nil {
			break // bound in the guest by the image runner
		}
		vol, err := d.volume(c.vm, m.Name)
		if err != nil {
			return err
		}
		link := filepath.Join(work, filepath.FromSlash(mountRel(m.Path)))
		if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
			return fmt.Errorf("mount %q at %q: %w", m.Name, m.Path, err)
		}
		_ = os.Remove(link)
		// The link is resolved in the guest, where the volume is on the share.
		if err := os.Symlink(vol.guestDir, link); err != nil {
			return fmt.Errorf("mount %q at %q: %w", m.Name, m.Path, err)
		}
	}
	for _, f := range []string{"stdout", "stderr"} {
		if err := os.WriteFile(filepath.Join(c.hostDir, f), nil, 0o644); err != nil {
			return fmt.Errorf("create %s file: %w", f, err)
		}
	}
	stdinMode := "none"
	if c.task.Stdin != nil {
		stdinMode = "chunks"
	}

	vars := c.task.Env
	root, wd, binds := "", "", ""
	if c.image != nil {
		vars = c.image.env(c.task.Env)
		root, wd = c.image.guestRoot(), c.image.config.WorkingDir
		if wd == "" {
			wd = "/"
		}
		var b strings.Builder
		for _, m := range c.task.Mounts {
			vol, err := d.volume(c.vm, m.Name)
			if err != nil {
				return err
			}
			b.WriteString(vol.guestDir + "\t" + orchestra.MountPath(wd, m.Path) + "\n")
		}
		binds = b.String()
	}
	env := make([]string, 0, len(vars)+1)
	for k, v := range vars {
		env = append(env, k+"="+v)
	}
	if _, ok := vars["PATH"]; !ok {
		env = append(env, "PATH="+defaultPath)
	}
	sort.Strings(env)
	// The wrapper travels in the argv (sh -c), saving a 9p read per task.
	lim := c.task.ContainerLimits
	args := append([]string{"setsid", "/bin/busybox", "sh", "-c", runScript, "pocketci-run", c.guestDir, c.task.User, stdinMode, root, wd, binds,
		strconv.FormatInt(lim.Memory, 10), strconv.FormatInt(cpuWeight(lim.CPU), 10), strconv.Itoa(c.slot)}, env...)
	args = append(args, c.task.Command...)
	pid, err := c.vm.agent.Exec(ctx, qga.ExecRequest{
		Path: "/bin/busybox",
		Args: args,
		Env:  []string{"PATH=/sbin:/usr/sbin:/bin:/usr/bin"},
	})
	if err != nil {
		return fmt.Errorf("guest-exec: %w", err)
	}
	c.mu.Lock()
	c.pid = pid
	c.mu.Unlock()
	if c.task.Stdin != nil {
		// Not waited for by Close: a Read on task.Stdin may block forever.
		// The feeder ends at the next chunk once the task is done.
		go c.feedStdin()
	}
	go func() {
		defer d.bg.Done()
		c.poll()
	}()
	d.logger.Debug("qemu: task started", "task", c.task.ID, "pid", pid, "user", c.task.User, "image", c.task.Image)
	return nil
}

// poll asks the agent for the task's state until it exited (or the VM is
// gone), then stores the result once.
func (c *Container) poll() {
	interval := pollFast
	startedAt := time.Now()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		st, err := c.vm.agent.ExecStatus(ctx, c.pid)
		cancel()
		switch {
		case err == nil && st.Exited:
			c.finish(st.Code())
			return
		case err != nil && !c.vm.alive():
			c.finish(137) // the VM was stopped: the task was killed with it
			return
		case err != nil:
			var qe *qga.Error
			if errors.As(err, &qe) {
				// The agent does not know the pid: its result is lost.
				c.driver.logger.Error("qemu: task status lost", "task", c.task.ID, "pid", c.pid, "err", err)
				c.finish(255)
				return
			}
			c.driver.logger.Debug("qemu: status poll failed, retrying", "task", c.task.ID, "err", err)
		}
		if time.Since(startedAt) > 200*time.Millisecond && interval < pollSlow {
			interval = min(interval*5/4+time.Millisecond, pollSlow)
		}
		select {
		case <-c.vm.exited:
		case <-time.After(interval):
		}
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

// Status reports the cached state; the poller updates it, so this never
// talks to the guest and can be polled forever.
func (c *Container) Status(ctx context.Context) (orchestra.ContainerStatus, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := status{done: c.done, code: c.exitCode}
	if c.done && c.stdinErr != nil {
		return st, fmt.Errorf("task %q was stopped because its stdin failed: %w", c.task.ID, c.stdinErr)
	}
	return st, nil
}

// Logs writes the task's output so far (all of it once done), read from the
// host side of the share.
func (c *Container) Logs(ctx context.Context, stdout, stderr io.Writer) error {
	for _, s := range []struct {
		file string
		w    io.Writer
	}{{"stdout", stdout}, {"stderr", stderr}} {
		if s.w == nil {
			continue
		}
		f, err := os.Open(filepath.Join(c.hostDir, s.file))
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("logs of task %q: %w", c.task.ID, orchestra.ErrContainerNotFound)
			}
			return fmt.Errorf("logs of task %q: %w", c.task.ID, err)
		}
		_, err = io.Copy(s.w, f)
		_ = f.Close()
		if err != nil {
			return fmt.Errorf("logs of task %q: copy %s: %w", c.task.ID, s.file, err)
		}
	}
	return nil
}

// FollowLogs streams output from the start as the task writes it and returns
// once the task exited and everything was written, or when ctx ends.
func (c *Container) FollowLogs(ctx context.Context, stdout, stderr io.Writer) error {
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
		if err != nil {
			return fmt.Errorf("follow logs of task %q: %w", c.task.ID, err)
		}
		defer f.Close()
		streams = append(streams, stream{f, s.w})
	}
	for {
		select {
		case <-c.doneCh:
			for _, s := range streams {
				if _, err := io.Copy(s.w, s.f); err != nil {
					return fmt.Errorf("follow logs of task %q: %w", c.task.ID, err)
				}
			}
			return nil
		default:
		}
		for _, s := range streams {
			if _, err := io.Copy(s.w, s.f); err != nil {
				return fmt.Errorf("follow logs of task %q: %w", c.task.ID, err)
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("follow logs of task %q: %w", c.task.ID, ctx.Err())
		case <-c.doneCh:
		case <-time.After(followInterval):
		}
	}
}

// Cleanup kills the task if it still runs and removes its files. It is
// idempotent.
func (c *Container) Cleanup(ctx context.Context) error {
	d := c.driver
	c.mu.Lock()
	if c.cleaned {
		c.mu.Unlock()
		return nil
	}
	c.cleaned = true
	running := !c.done && c.pid != 0
	c.mu.Unlock()
	c.stopStdin()
	if running && c.vm.alive() {
		c.kill(ctx)
	}
	d.mu.Lock()
	if d.containers[c.task.ID] == c {
		delete(d.containers, c.task.ID)
	}
	d.mu.Unlock()
	c.removeFiles()
	return nil
}

// kill SIGKILLs the task's process group (the wrapper runs under setsid, so
// its pid is the group) and waits, bounded, for the poller to see it end.
func (c *Container) kill(ctx context.Context) {
	d := c.driver
	c.mu.Lock()
	pid := c.pid
	c.mu.Unlock()
	killCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	// Everything in the task's cgroup (its descendants, setsid or not),
	// then the wrapper's process group (wrapper, copiers).
	const killScript = `g=/sys/fs/cgroup/slot-$2
[ -d $g ] && echo 1 >$g/cgroup.kill
kill -9 -$1`
	kpid, err := c.vm.agent.Exec(killCtx, qga.ExecRequest{Path: "/bin/busybox", Args: []string{"sh", "-c", killScript, "pocketci-kill", strconv.Itoa(pid), strconv.Itoa(c.slot)}})
	if err == nil {
		for killCtx.Err() == nil {
			st, err := c.vm.agent.ExecStatus(killCtx, kpid)
			if err != nil || st.Exited {
				break
			}
			time.Sleep(pollFast)
		}
	} else {
		d.logger.Warn("qemu: kill task", "task", c.task.ID, "err", err)
	}
	select {
	case <-c.doneCh:
	case <-killCtx.Done():
		d.logger.Warn("qemu: task did not end after kill", "task", c.task.ID)
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

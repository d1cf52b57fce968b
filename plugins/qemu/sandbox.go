package qemu

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"strconv"
	"sync"

	"github.com/jtarchie/pocketci/orchestra"
	"github.com/jtarchie/pocketci/plugins/qemu/guestproto"
)

// A sandbox lives in the namespace's VM. In an image, its root (the
// image under an overlay whose writable layer is a tmpfs, with the task's
// volumes bound in) is mounted by the guest daemon on the sandbox's first
// command and kept until Cleanup: every Exec runs chrooted there, in a
// copy of that mount namespace, so what one command writes the next one
// sees. Without an image it is the guest's own userland, with a working
// directory of its own on the share. Each Exec is started like a task
// (its own guest slot, so its own cgroup: cancelling it kills its whole
// tree and nothing else), with its own directory on the share for its
// output and stdin, streamed live.

var _ orchestra.SandboxDriver = (*Driver)(nil)

// Sandbox is a long-lived environment in the namespace's VM. It implements
// orchestra.Sandbox.
type Sandbox struct {
	driver   *Driver
	vm       *vm
	id       string // sandbox-<task>-<name>: its directory on the share
	name     string // the guest daemon's name of its root (hex)
	task     orchestra.Task
	image    *image // nil: the guest's own userland
	hostDir  string // <share>/sandboxes/<id>
	guestDir string

	mu      sync.Mutex
	removed bool
	next    int
	running map[*Container]struct{}
}

var _ orchestra.Sandbox = (*Sandbox)(nil)

// StartSandbox starts a sandbox for task in the namespace's VM (booting it
// when needed): task.Command is not run; task.Env, User, Privileged,
// Mounts, limits and Image apply to every Exec. Nothing runs until Exec.
func (d *Driver) StartSandbox(ctx context.Context, task orchestra.Task) (orchestra.Sandbox, error) {
	check := task
	if len(check.Command) == 0 {
		check.Command = []string{"sandbox"}
	}
	if err := validate(check); err != nil {
		return nil, err
	}
	if task.Stdin != nil {
		return nil, fmt.Errorf("qemu: %w: sandbox %q: Stdin: a sandbox takes its input per Exec", orchestra.ErrInvalidTask, task.ID)
	}
	v, err := d.ensureVM(ctx)
	if err != nil {
		return nil, fmt.Errorf("start sandbox %q: %w", task.ID, err)
	}
	s := &Sandbox{driver: d, vm: v, task: task, running: map[*Container]struct{}{}}
	if task.Image != "" {
		if s.image, err = resolveImage(ctx, v.images, task.Image, d.logger); err != nil {
			return nil, fmt.Errorf("start sandbox %q: %w", task.ID, err)
		}
	}
	random := make([]byte, 6)
	_, _ = rand.Read(random)
	s.name = hex.EncodeToString(random)
	s.id = "sandbox-" + taskDirName(d.namespace, task.ID) + "-" + s.name
	s.hostDir = filepath.Join(d.share, "sandboxes", s.id)
	s.guestDir = guestShare + "/sandboxes/" + s.id
	if err := os.MkdirAll(filepath.Join(s.hostDir, "work"), 0o755); err != nil {
		return nil, fmt.Errorf("start sandbox %q: create its directory: %w", task.ID, err)
	}
	d.logger.Debug("qemu: sandbox started", "sandbox", s.id, "image", task.Image)
	return s, nil
}

// ID is the sandbox's directory name in the namespace.
func (s *Sandbox) ID() string { return s.id }

// Exec runs cmd in the sandbox with the task's environment plus env, in
// workDir (orchestra.WorkingDir of the sandbox's default working
// directory), streaming stdin to it and its output to stdout and stderr as
// it comes. It returns the command's exit code (128+N for signal N); when
// ctx ends first, the command and everything it started are killed and the
// error is ctx's.
func (s *Sandbox) Exec(ctx context.Context, cmd []string, env map[string]string, workDir string, stdin io.Reader, stdout, stderr io.Writer) (orchestra.ContainerStatus, error) {
	c, err := s.startExec(ctx, cmd, env, workDir, stdin)
	if err != nil {
		return nil, err
	}
	defer s.endExec(c)
	if err := c.Logs(ctx, stdout, stderr, true); err != nil {
		if ctx.Err() != nil {
			c.stopStdin()
			c.kill(context.WithoutCancel(ctx))
			return nil, fmt.Errorf("exec %q in sandbox %s: %w", cmd[0], s.id, ctx.Err())
		}
		return nil, fmt.Errorf("exec %q in sandbox %s: %w", cmd[0], s.id, err)
	}
	c.mu.Lock()
	st, stdinErr := status{done: true, code: c.exitCode}, c.stdinErr
	c.mu.Unlock()
	if stdinErr != nil {
		return st, fmt.Errorf("exec %q in sandbox %s was stopped because its stdin failed: %w", cmd[0], s.id, stdinErr)
	}
	return st, nil
}

// startExec starts one command as a task of the sandbox.
func (s *Sandbox) startExec(ctx context.Context, cmd []string, env map[string]string, workDir string, stdin io.Reader) (*Container, error) {
	d := s.driver
	task := s.task
	task.Command, task.WorkDir, task.Stdin = cmd, workDir, stdin
	task.Env = maps.Clone(s.task.Env)
	if task.Env == nil {
		task.Env = map[string]string{}
	}
	maps.Copy(task.Env, env)
	if err := validate(task); err != nil {
		return nil, fmt.Errorf("exec in sandbox %s: %w", s.id, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	d.mu.Lock()
	closed := d.closed
	d.mu.Unlock()
	switch {
	case s.removed:
		return nil, fmt.Errorf("exec in sandbox %s: it was cleaned up: %w", s.id, orchestra.ErrContainerNotFound)
	case closed:
		return nil, fmt.Errorf("exec in sandbox %s: %w", s.id, orchestra.ErrClosed)
	case !s.vm.alive() || s.vm.shareReplaced():
		return nil, fmt.Errorf("exec in sandbox %s: its VM is gone, and its files with it: %w", s.id, orchestra.ErrContainerNotFound)
	}
	s.next++
	c := newContainer(d, s.vm, task)
	c.sandbox, c.image = s, s.image
	c.hostDir = filepath.Join(s.hostDir, "exec-"+strconv.Itoa(s.next))
	c.guestDir = s.guestDir + "/exec-" + strconv.Itoa(s.next)
	c.slot = d.takeSlot()
	d.bg.Add(1) // the command's end, reported once start succeeded
	if err := c.start(ctx); err != nil {
		d.bg.Done()
		d.releaseSlot(s.vm, c.slot)
		c.removeFiles()
		return nil, fmt.Errorf("exec %q in sandbox %s: %w", cmd[0], s.id, err)
	}
	s.running[c] = struct{}{}
	return c, nil
}

// endExec forgets a command that ended and removes its files.
func (s *Sandbox) endExec(c *Container) {
	s.mu.Lock()
	delete(s.running, c)
	s.mu.Unlock()
	c.stopStdin()
	// Retried: the stdin feeder may publish a last chunk meanwhile (the
	// sandbox's Cleanup removes whatever is left).
	if err := removeAllRetry(c.hostDir); err != nil {
		s.driver.logger.Debug("qemu: remove a sandbox command's files", "sandbox", s.id, "err", err)
	}
}

// Cleanup kills the commands still running, unmounts the sandbox's root
// in the guest and removes its files. It is idempotent.
func (s *Sandbox) Cleanup(ctx context.Context) error {
	s.mu.Lock()
	if s.removed {
		s.mu.Unlock()
		return nil
	}
	s.removed = true
	running := make([]*Container, 0, len(s.running))
	for c := range s.running {
		running = append(running, c)
	}
	s.mu.Unlock()
	alive := s.vm.alive()
	for _, c := range running {
		c.stopStdin()
		if alive {
			c.kill(ctx)
		}
	}
	var errs []error
	if alive && s.image != nil {
		if err := s.vm.guestd.drop(s.name); err != nil {
			errs = append(errs, fmt.Errorf("unmount its root in the guest: %w", err))
		}
	}
	if err := removeAllRetry(s.hostDir); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("cleanup of sandbox %s: %w", s.id, err)
	}
	s.driver.logger.Debug("qemu: sandbox removed", "sandbox", s.id)
	return nil
}

// drop asks the daemon to unmount and remove the sandbox root name.
func (g *guestdClient) drop(name string) error {
	return g.send(guestproto.Request{Op: guestproto.OpDrop, Sandbox: name})
}

//go:build linux

package native

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path"
	"path/filepath"
	"sync"
	"time"

	"github.com/jtarchie/pocketci/orchestra"
	"github.com/jtarchie/pocketci/plugins/native/internal/shim"
)

// A sandbox is a directory like a task's (work/ with the task's mounts)
// that outlives its commands: no process waits in it between Execs. Each
// Exec starts a shim of its own, as a task does, so the command's whole
// tree is killed when it ends, when its ctx is cancelled, on Cleanup and on
// Close, and two Execs run side by side.

var _ orchestra.SandboxDriver = (*Driver)(nil)

// Sandbox is a long-lived environment for one task, in which Exec runs
// commands. It implements orchestra.Sandbox.
type Sandbox struct {
	driver *Driver
	id     string // the base name of dir: unique in the namespace
	taskID string
	dir    string // <root>/<namespace>/sandboxes/<id>
	layout *layout
	binds  []shim.Bind
	env    map[string]string // the task's Env: what every Exec's env adds to
	wd     string            // the default working directory, as commands see it
	uid    int               // -1: the driver's user
	gid    int

	mu      sync.Mutex
	removed bool
	running map[*execution]struct{}
	execs   sync.WaitGroup
}

var _ orchestra.Sandbox = (*Sandbox)(nil)

// StartSandbox makes a sandbox for task: its own directory
// <root>/<namespace>/sandboxes/<task>-<random> with a work/ directory, the
// task's mounts placed there as RunContainer places them, its WorkDir
// created, its User resolved. task.Command is not run; task.Env is the base
// environment of every Exec. Nothing runs until Exec.
func (d *Driver) StartSandbox(ctx context.Context, task orchestra.Task) (orchestra.Sandbox, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("native: start sandbox %q: %w", task.ID, err)
	}
	if err := validateSandboxTask(task); err != nil {
		return nil, err
	}
	cred, err := credential(task.User)
	if err != nil {
		return nil, fmt.Errorf("native: sandbox %q: %w", task.ID, err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, fmt.Errorf("native: start sandbox %q: %w", task.ID, orchestra.ErrClosed)
	}
	parent := filepath.Join(d.dir, "sandboxes")
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return nil, fmt.Errorf("native: sandbox %q: create directory: %w", task.ID, err)
	}
	dir, err := os.MkdirTemp(parent, orchestra.SafeName(orchestra.PathNameRule, task.ID)+"-")
	if err != nil {
		return nil, fmt.Errorf("native: sandbox %q: create directory: %w", task.ID, err)
	}
	s := &Sandbox{
		driver: d, id: filepath.Base(dir), taskID: task.ID, dir: dir,
		env: maps.Clone(task.Env), uid: -1, gid: -1, running: map[*execution]struct{}{},
	}
	if cred != nil {
		s.uid, s.gid = int(cred.Uid), int(cred.Gid)
	}
	if err := s.prepareLocked(task); err != nil {
		if rerr := os.RemoveAll(dir); rerr != nil {
			d.logger.Warn("remove the directory of a sandbox that did not start", "sandbox", s.id, "err", rerr)
		}
		return nil, err
	}
	d.sandboxes[s] = struct{}{}
	d.logger.Debug("sandbox started", "sandbox", s.id, "task", task.ID, "dir", dir)
	return s, nil
}

// validateSandboxTask checks task as RunContainer does, without its
// Command (a sandbox runs none). Stdin is refused: a sandbox's input is
// given per Exec.
func validateSandboxTask(task orchestra.Task) error {
	if err := orchestra.ValidateSandboxTask(task); err != nil {
		return err
	}
	if task.Stdin != nil {
		return fmt.Errorf("native: %w: sandbox %q: Stdin: a sandbox takes its input per Exec", orchestra.ErrInvalidTask, task.ID)
	}
	return validateMounts(task)
}

// prepareLocked places the task's mounts in work/ and creates its working
// directory. d.mu is held.
func (s *Sandbox) prepareLocked(task orchestra.Task) error {
	work := filepath.Join(s.dir, "work")
	if err := os.MkdirAll(work, 0o755); err != nil {
		return fmt.Errorf("native: sandbox %q: create working directory: %w", task.ID, err)
	}
	l, binds, err := s.driver.mountLocked(task, work)
	if err != nil {
		return err
	}
	s.layout, s.binds = l, binds
	wd, host, inVolume, err := l.workDir(task)
	if err != nil {
		return err
	}
	s.wd = wd
	if s.uid < 0 {
		return nil
	}
	dirs := []string{work}
	if !inVolume && host != work { // volumes are not chowned
		dirs = append(dirs, host)
	}
	for _, p := range dirs {
		if err := os.Chown(p, s.uid, s.gid); err != nil {
			return fmt.Errorf("native: sandbox %q: chown working directory to User %q: %w", task.ID, task.User, err)
		}
	}
	return nil
}

// ID is the name of the sandbox's directory, unique in the namespace.
func (s *Sandbox) ID() string { return s.id }

// Exec runs cmd in the sandbox and returns once it and all of its
// descendants are gone and all of its output was written. env adds to (and
// overrides) the task's Env for this call only; workDir is this call's
// working directory (see workingDir). Output is streamed as the command
// writes it. Cancelling ctx kills the command's whole tree: Exec then
// returns an error wrapping ctx.Err(). A command that is not there exits
// 127 with a message on stderr, as in RunContainer.
func (s *Sandbox) Exec(ctx context.Context, cmd []string, env map[string]string, workDir string, stdin io.Reader, stdout, stderr io.Writer) (orchestra.ContainerStatus, error) {
	merged := maps.Clone(s.env)
	if merged == nil {
		merged = map[string]string{}
	}
	maps.Copy(merged, env)
	// The contract's rules for Command, Env and WorkDir, with its text.
	if err := orchestra.ValidateTask(orchestra.Task{ID: s.taskID, Command: cmd, Env: merged, WorkDir: workDir}); err != nil {
		return nil, fmt.Errorf("native: sandbox %q: Exec: %w", s.id, err)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("native: sandbox %q: Exec %q: %w", s.id, cmd[0], err)
	}
	e, err := s.begin()
	if err != nil {
		return nil, err
	}
	defer s.end(e)
	wd, err := s.workingDir(workDir)
	if err != nil {
		return nil, err
	}
	spec := shim.Spec{
		Path:  resolveCommand(cmd[0], wd),
		Args:  cmd,
		Env:   taskEnv(merged, wd),
		Dir:   wd,
		UID:   s.uid,
		GID:   s.gid,
		Binds: s.binds,
	}
	code, err := e.run(ctx, spec, stdin, stdout, stderr)
	if err != nil {
		return nil, fmt.Errorf("native: sandbox %q: Exec %q: %w", s.id, cmd[0], err)
	}
	return status{done: true, exitCode: code}, nil
}

// workingDir is where an Exec runs, as the command sees it. Empty is the
// sandbox's default (the task's WorkDir, else work/). A relative workDir,
// and an absolute one at or below a mount path, is mapped as a task's
// WorkDir is (created when missing, inside the volume when in a mount). Any
// other absolute workDir is that directory of the host: native has no root
// of its own, so "/tmp" is the host's /tmp, where the command's own
// absolute paths lead too (and where `pwd` prints "/tmp", as pocketci
// expects); it is not created.
func (s *Sandbox) workingDir(workDir string) (string, error) {
	if workDir == "" {
		return s.wd, nil
	}
	if path.IsAbs(workDir) && s.layout.holder(rootRel(workDir), -1) == nil {
		return filepath.Clean(workDir), nil
	}
	wd, host, inVolume, err := s.layout.workDir(orchestra.Task{ID: s.taskID, WorkDir: workDir})
	if err != nil {
		return "", fmt.Errorf("native: sandbox %q: Exec: %w", s.id, err)
	}
	if s.uid >= 0 && !inVolume {
		if err := os.Chown(host, s.uid, s.gid); err != nil {
			return "", fmt.Errorf("native: sandbox %q: Exec: chown workDir %q: %w", s.id, workDir, err)
		}
	}
	return wd, nil
}

// begin registers a new Exec, unless the sandbox was removed.
func (s *Sandbox) begin() (*execution, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.removed {
		return nil, fmt.Errorf("native: sandbox %q was cleaned up: %w", s.id, orchestra.ErrContainerNotFound)
	}
	e := &execution{sandbox: s}
	s.running[e] = struct{}{}
	s.execs.Add(1)
	return e, nil
}

func (s *Sandbox) end(e *execution) {
	s.mu.Lock()
	delete(s.running, e)
	s.mu.Unlock()
	s.execs.Done()
}

// Cleanup kills every command running in the sandbox with its tree, waits
// for them and removes the sandbox's directory. It is idempotent; Exec
// afterwards is an error wrapping orchestra.ErrContainerNotFound. Volumes
// stay (they are the namespace's).
func (s *Sandbox) Cleanup(ctx context.Context) error {
	s.driver.mu.Lock()
	delete(s.driver.sandboxes, s)
	s.driver.mu.Unlock()
	s.killAll()
	return s.remove(ctx)
}

// killAll marks the sandbox removed and kills every running command.
func (s *Sandbox) killAll() {
	s.mu.Lock()
	s.removed = true
	running := make([]*execution, 0, len(s.running))
	for e := range s.running {
		running = append(running, e)
	}
	s.mu.Unlock()
	for _, e := range running {
		e.kill(errCleanedUp)
	}
}

// remove waits for the killed commands (escalating to SIGKILL of their
// shims' groups) and deletes the sandbox's directory. killAll came first.
func (s *Sandbox) remove(ctx context.Context) error {
	gone := make(chan struct{})
	go func() {
		s.execs.Wait()
		close(gone)
	}()
	soft := time.NewTimer(killWait / 4)
	defer soft.Stop()
	hard := time.NewTimer(killWait)
	defer hard.Stop()
wait:
	for {
		select {
		case <-gone:
			break wait
		case <-ctx.Done():
			return fmt.Errorf("native: sandbox %q: wait for its killed commands: %w", s.id, ctx.Err())
		case <-soft.C:
			s.driver.logger.Warn("sandbox commands did not end after their kill pipes closed; killing their process groups", "sandbox", s.id)
			s.mu.Lock()
			for e := range s.running {
				e.killHard()
			}
			s.mu.Unlock()
		case <-hard.C:
			// Their Exec is stuck writing to its caller; the processes are
			// gone. Remove the directory all the same.
			s.driver.logger.Warn("sandbox Exec calls still running after their commands were killed", "sandbox", s.id, "after", killWait)
			break wait
		}
	}
	if err := removeAllRetry(s.dir); err != nil {
		return fmt.Errorf("native: sandbox %q: remove directory: %w", s.id, err)
	}
	return nil
}

// errCleanedUp is why an Exec failed whose command Cleanup or Close killed.
var errCleanedUp = errors.New("the sandbox was cleaned up while the command ran")

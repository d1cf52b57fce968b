package docker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types"
	"github.com/docker/docker/api/types/container"

	"github.com/jtarchie/pocketci/orchestra"
)

// A sandbox is a container of the task's image whose process is a
// keep-alive under the engine's init; each Exec is an engine exec in it.
// The engine has no API to kill an exec, so every exec carries a marker
// in its environment, and cancelling one runs a second exec that kills
// every process carrying that marker (see killExec). See README.md,
// "Sandboxes".

var _ orchestra.SandboxDriver = (*Driver)(nil)

// keepAlive is the sandbox container's entrypoint: it waits forever
// without output (the image's own entrypoint and command are not run).
var keepAlive = []string{"tail", "-f", "/dev/null"}

// ExecMarkerEnv is the variable every Exec's command gets, with a value
// unique to that Exec, so that a cancelled Exec's processes can be found
// and killed inside the sandbox.
const ExecMarkerEnv = "ORCHESTRA_SANDBOX_EXEC"

const (
	// killWait bounds how long a cancelled Exec waits for its output to
	// end once its processes were killed.
	killWait = 10 * time.Second
	// inspectWait bounds how long Exec waits for the engine to record an
	// exit code once the output ended.
	inspectWait = 10 * time.Second
)

// errCleanedUp is wrapped when an Exec's sandbox was removed.
var errCleanedUp = errors.New("the sandbox was cleaned up")

// Sandbox is a long-lived container in which Exec runs commands. It
// implements orchestra.Sandbox.
type Sandbox struct {
	driver *Driver
	id     string // engine ID
	name   string // Docker name
	taskID string

	mu      sync.Mutex
	removed bool // Cleanup was called: Exec is refused
	gone    bool // Cleanup removed the container
}

var _ orchestra.Sandbox = (*Sandbox)(nil)

// ID is the sandbox container's engine ID.
func (s *Sandbox) ID() string { return s.id }

// StartSandbox creates and starts a container for task with everything
// RunContainer applies (image, mounts, env, user, working directory,
// limits, privileged, the engine's init as PID 1); its Command is not
// run: the container runs keepAlive until Cleanup or Close. Stdin is
// refused (input is given per Exec).
func (d *Driver) StartSandbox(ctx context.Context, task orchestra.Task) (orchestra.Sandbox, error) {
	if err := validateSandboxTask(task); err != nil {
		return nil, fmt.Errorf("docker: start sandbox: %w", err)
	}
	d.lifecycle.RLock()
	defer d.lifecycle.RUnlock()
	if d.closing {
		return nil, fmt.Errorf("docker: start sandbox %q: %w", task.ID, orchestra.ErrClosed)
	}
	if err := d.connect(ctx); err != nil {
		return nil, fmt.Errorf("docker: start sandbox %q: %w", task.ID, err)
	}
	ref, err := d.ensureImage(ctx, task.Image)
	if err != nil {
		return nil, fmt.Errorf("docker: start sandbox %q: %w", task.ID, err)
	}
	mounts, err := d.taskMounts(ctx, task)
	if err != nil {
		return nil, fmt.Errorf("docker: start sandbox %q: %w", task.ID, err)
	}
	cfg, hostCfg := d.containerConfig(task, ref, mounts)
	cfg.Entrypoint, cfg.Cmd = keepAlive, nil
	delete(cfg.Labels, LabelTaskID) // not a task: RunContainer and GetContainer never see it
	cfg.Labels[LabelSandbox] = task.ID
	// Several sandboxes may be started for one task ID: the suffix keeps
	// their names apart.
	name := orchestra.SafeName(orchestra.DockerNameRule, d.namespace, task.ID, "sandbox", randomHex(4))
	created, err := d.client.ContainerCreate(ctx, cfg, hostCfg, nil, nil, name)
	if err != nil {
		return nil, fmt.Errorf("docker: create sandbox container %q for task %q: %w", name, task.ID, err)
	}
	if err := d.client.ContainerStart(ctx, created.ID, container.StartOptions{}); err != nil {
		d.removeQuietly(created.ID, name)
		return nil, fmt.Errorf("docker: start sandbox container %q for task %q (it runs %q, which the image must have): %w",
			name, task.ID, strings.Join(keepAlive, " "), err)
	}
	d.logger.Debug("sandbox started", "task", task.ID, "container", name, "id", created.ID)
	return &Sandbox{driver: d, id: created.ID, name: name, taskID: task.ID}, nil
}

// validateSandboxTask checks task as RunContainer does, without its
// Command (a sandbox runs none); Stdin is refused.
func validateSandboxTask(task orchestra.Task) error {
	if err := orchestra.ValidateSandboxTask(task); err != nil {
		return err
	}
	if task.Image == "" {
		return fmt.Errorf("%w: sandbox %q: Image is empty", orchestra.ErrInvalidTask, task.ID)
	}
	if task.Stdin != nil {
		return fmt.Errorf("%w: sandbox %q: Stdin: a sandbox takes its input per Exec", orchestra.ErrInvalidTask, task.ID)
	}
	return nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Exec runs cmd in the sandbox and returns its exit status once it ended
// and its output was written. env adds to the task's Env and workDir
// (absolute, or relative to "/" as a task's WorkDir; empty: the task's
// working directory) apply to this call only. stdin, when not nil, is
// streamed in and closed at its end; stdout and stderr are written as the
// command writes them, demultiplexed exactly. The exit code is the
// command's, 128+N when a signal N killed it. Cancelling ctx kills this
// command and its descendants only (see killExec) and returns an error
// wrapping ctx.Err(). A command that is not there exits 127 with the
// engine's message on stderr, as in RunContainer.
func (s *Sandbox) Exec(ctx context.Context, cmd []string, env map[string]string, workDir string, stdin io.Reader, stdout, stderr io.Writer) (orchestra.ContainerStatus, error) {
	if err := s.checkExec(ctx, cmd, env, workDir); err != nil {
		return nil, err
	}
	marker := randomHex(16)
	opts := container.ExecOptions{
		Cmd:          cmd,
		Env:          append(envList(env), ExecMarkerEnv+"="+marker),
		AttachStdin:  stdin != nil,
		AttachStdout: true,
		AttachStderr: true,
	}
	if workDir != "" {
		opts.WorkingDir = orchestra.WorkingDir(defaultWorkDir, orchestra.Task{WorkDir: workDir})
	}
	created, err := s.driver.client.ContainerExecCreate(ctx, s.id, opts)
	if err != nil {
		return nil, s.execError(cmd, "create exec", err)
	}
	hijack, err := s.driver.client.ContainerExecAttach(ctx, created.ID, container.ExecAttachOptions{})
	if err != nil {
		if ctx.Err() != nil {
			// The engine may have started the command before the
			// cancellation cut the attach short.
			if kerr := s.killExec(marker); kerr != nil {
				s.driver.logger.Warn("could not kill a cancelled exec's processes", "sandbox", s.name, "exec", created.ID, "err", kerr)
			}
		}
		return nil, s.execError(cmd, "attach to exec", err)
	}
	defer hijack.Close()
	r := &execRun{s: s, execID: created.ID, marker: marker, hijack: &hijack}
	return r.wait(ctx, cmd, stdin, orDiscard(stdout), orDiscard(stderr))
}

// defaultWorkDir is every container's default working directory (workDir,
// which Exec's parameter of that name hides).
const defaultWorkDir = workDir

// checkExec validates an Exec's arguments with the contract's rules and
// refuses one on a sandbox cleaned up or a closed driver.
func (s *Sandbox) checkExec(ctx context.Context, cmd []string, env map[string]string, workDir string) error {
	if err := orchestra.ValidateTask(orchestra.Task{ID: s.taskID, Command: cmd, Env: env, WorkDir: workDir}); err != nil {
		return fmt.Errorf("docker: sandbox %s: Exec: %w", s.name, err)
	}
	if _, ok := env[ExecMarkerEnv]; ok {
		return fmt.Errorf("docker: sandbox %s: Exec: %w: Env: %s is the driver's own", s.name, orchestra.ErrInvalidTask, ExecMarkerEnv)
	}
	if s.isRemoved() {
		return fmt.Errorf("docker: sandbox %s: Exec %q: %w: %w", s.name, cmd[0], errCleanedUp, orchestra.ErrContainerNotFound)
	}
	if s.driver.isClosing() {
		return fmt.Errorf("docker: sandbox %s: Exec %q: %w", s.name, cmd[0], orchestra.ErrClosed)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("docker: sandbox %s: Exec %q: %w", s.name, cmd[0], err)
	}
	return nil
}

// execError wraps an engine error of an Exec; a sandbox container the
// engine no longer has is orchestra.ErrContainerNotFound.
func (s *Sandbox) execError(cmd []string, what string, err error) error {
	if cerrdefs.IsNotFound(err) {
		return fmt.Errorf("docker: sandbox %s: Exec %q: %w: %w", s.name, cmd[0], errCleanedUp, orchestra.ErrContainerNotFound)
	}
	return fmt.Errorf("docker: sandbox %s: Exec %q: %s: %w", s.name, cmd[0], what, err)
}

// execRun is one Exec in progress.
type execRun struct {
	s      *Sandbox
	execID string
	marker string
	hijack *types.HijackedResponse
}

// wait streams the exec's input and output until it ends, ctx ends or
// stdin fails, and returns its status.
func (r *execRun) wait(ctx context.Context, cmd []string, stdin io.Reader, stdout, stderr io.Writer) (orchestra.ContainerStatus, error) {
	s := r.s
	gate := &startGate{stdout: stdout, stderr: stderr}
	outDone := make(chan error, 1)
	go func() {
		outDone <- newDemux(gateStream{g: gate}, gateStream{g: gate, stderr: true}, false).copy(r.hijack.Reader, false)
	}()
	stdinFailed := make(chan error, 1)
	if stdin != nil {
		go r.copyStdin(stdin, stdinFailed)
	}
	select {
	case err := <-outDone:
		if err != nil {
			return nil, s.execError(cmd, "read output", err)
		}
	case <-ctx.Done():
		r.kill(outDone)
		return nil, fmt.Errorf("docker: sandbox %s: Exec %q: cancelled: %w", s.name, cmd[0], ctx.Err())
	case err := <-stdinFailed:
		r.kill(outDone)
		return nil, fmt.Errorf("docker: sandbox %s: Exec %q: stdin failed, the command was killed: %w", s.name, cmd[0], err)
	}
	if s.isRemoved() {
		return nil, fmt.Errorf("docker: sandbox %s: Exec %q: %w while the command ran: %w", s.name, cmd[0], errCleanedUp, orchestra.ErrContainerNotFound)
	}
	if s.driver.isClosing() {
		return nil, fmt.Errorf("docker: sandbox %s: Exec %q: the driver was closed while the command ran: %w", s.name, cmd[0], orchestra.ErrClosed)
	}
	info, err := r.exited(ctx)
	if err != nil {
		return nil, s.execError(cmd, "inspect exec", err)
	}
	code := info.ExitCode
	msg, err := gate.finish(info.Pid != 0 || code != 126)
	if err != nil {
		return nil, fmt.Errorf("docker: sandbox %s: Exec %q: write output: %w", s.name, cmd[0], err)
	}
	if msg != "" && notFound(msg) {
		code = 127 // the engine says 126 for every failed start
	}
	return &Status{done: true, exitCode: code}, nil
}

// copyStdin feeds stdin into the exec and half-closes it at EOF. When the
// caller's reader fails, the command must not read a clean end of its
// input: the failure is reported on failed and the command killed.
func (r *execRun) copyStdin(stdin io.Reader, failed chan<- error) {
	src := &errorRecorder{r: stdin}
	_, _ = io.Copy(r.hijack.Conn, src)
	if src.err != nil {
		failed <- src.err
		return
	}
	_ = r.hijack.CloseWrite()
}

// kill kills the exec's processes, then waits (bounded) for its output to
// end and closes the connection.
func (r *execRun) kill(outDone <-chan error) {
	if err := r.s.killExec(r.marker); err != nil {
		r.s.driver.logger.Warn("could not kill a cancelled exec's processes: they run on until Cleanup",
			"sandbox", r.s.name, "exec", r.execID, "err", err)
	}
	select {
	case <-outDone:
		return
	case <-time.After(killWait):
		r.s.driver.logger.Warn("a killed exec's output did not end: closing the connection", "sandbox", r.s.name, "exec", r.execID)
	}
	r.hijack.Close()
	<-outDone // the copy fails at once: nothing writes to the caller's writers after Exec
}

// exited waits for the engine to record the exec's exit and returns the
// exec's state.
func (r *execRun) exited(ctx context.Context) (container.ExecInspect, error) {
	deadline := time.Now().Add(inspectWait)
	for {
		info, err := r.s.driver.client.ContainerExecInspect(context.WithoutCancel(ctx), r.execID)
		if err != nil {
			return info, err
		}
		if !info.Running {
			return info, nil
		}
		if time.Now().After(deadline) {
			return info, fmt.Errorf("the engine still reports exec %s running after its output ended", r.execID)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// killScript kills, inside the sandbox, every process whose environment
// holds the marker given as $1 (the exec's command and the descendants
// that kept its environment) and the process group each leads (an exec's
// command leads its own session), until none is left. It runs as the
// sandbox's user, with the image's sh, tr, grep and kill.
const killScript = `m="$1"; i=0
while [ $i -lt 50 ]; do
  found=0
  for e in /proc/[0-9]*/environ; do
    p=${e#/proc/}; p=${p%/environ}
    [ "$p" = "$$" ] && continue
    if tr '\000' '\n' < "$e" 2>/dev/null | grep -qxF "$m"; then
      found=1; kill -KILL -- "-$p" 2>/dev/null; kill -KILL "$p" 2>/dev/null
    fi
  done
  [ $found = 0 ] && exit 0
  i=$((i+1)); sleep 0.1
done
exit 1`

// killExec runs killScript for marker in the sandbox and waits for it.
func (s *Sandbox) killExec(marker string) error {
	ctx, cancel := context.WithTimeout(context.Background(), killWait)
	defer cancel()
	cli := s.driver.client
	created, err := cli.ContainerExecCreate(ctx, s.id, container.ExecOptions{
		Cmd:          []string{"sh", "-c", killScript, "orchestra-kill", ExecMarkerEnv + "=" + marker},
		AttachStdout: true,
		AttachStderr: true,
	})
	if err != nil {
		return fmt.Errorf("create the killing exec: %w", err)
	}
	hijack, err := cli.ContainerExecAttach(ctx, created.ID, container.ExecAttachOptions{})
	if err != nil {
		return fmt.Errorf("start the killing exec: %w", err)
	}
	defer hijack.Close()
	var out strings.Builder
	if err := newDemux(&out, &out, false).copy(hijack.Reader, false); err != nil {
		return fmt.Errorf("the killing exec: %w", err)
	}
	info, err := cli.ContainerExecInspect(ctx, created.ID)
	if err != nil {
		return fmt.Errorf("inspect the killing exec: %w", err)
	}
	if info.ExitCode != 0 {
		return fmt.Errorf("the killing exec exited %d: %.200s", info.ExitCode, out.String())
	}
	return nil
}

// startFailurePrefix begins the message the engine writes on an exec's
// stdout when the runtime could not start its command.
const startFailurePrefix = "OCI runtime exec failed"

// startGate passes an exec's output on, except that it holds a first
// stdout write that starts like the engine's start failure until it is
// known whether the command started: a failed start is that one message
// and nothing else, so any further output (which the gate passes on after
// it) means the command ran and printed it itself.
type startGate struct {
	stdout, stderr io.Writer
	mu             sync.Mutex
	writes         int
	held           []byte
}

type gateStream struct {
	g      *startGate
	stderr bool
}

func (s gateStream) Write(p []byte) (int, error) {
	g := s.g
	g.mu.Lock()
	defer g.mu.Unlock()
	g.writes++
	if g.writes == 1 && !s.stderr && strings.HasPrefix(string(p), startFailurePrefix) {
		g.held = append([]byte(nil), p...)
		return len(p), nil
	}
	if err := g.flushLocked(); err != nil {
		return 0, err
	}
	if s.stderr {
		return g.stderr.Write(p)
	}
	return g.stdout.Write(p)
}

func (g *startGate) flushLocked() error {
	if g.held == nil {
		return nil
	}
	held := g.held
	g.held = nil
	_, err := g.stdout.Write(held)
	return err
}

// finish writes what the gate holds: to stderr when the command did not
// start, else to stdout. It returns the message of a failed start.
func (g *startGate) finish(started bool) (string, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.held == nil {
		return "", nil
	}
	if started {
		return "", g.flushLocked()
	}
	msg := string(g.held)
	g.held = nil
	_, err := g.stderr.Write([]byte(msg))
	return msg, err
}

// notFound reports whether a failed start's message says the command is
// not there (not the working directory).
func notFound(msg string) bool {
	return !strings.Contains(msg, "chdir to cwd") &&
		(strings.Contains(msg, "executable file not found") || strings.Contains(msg, "no such file or directory"))
}

// isClosing reports whether Close was called. It waits for a Close in
// progress.
func (d *Driver) isClosing() bool {
	d.lifecycle.RLock()
	defer d.lifecycle.RUnlock()
	return d.closing
}

func (s *Sandbox) isRemoved() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.removed
}

// Cleanup removes the sandbox container, killing what runs in it; Execs
// in progress return an error. It is idempotent.
func (s *Sandbox) Cleanup(ctx context.Context) error {
	s.mu.Lock()
	s.removed = true
	gone := s.gone
	s.mu.Unlock()
	if gone {
		return nil
	}
	err := s.driver.client.ContainerRemove(ctx, s.id, container.RemoveOptions{Force: true})
	if err != nil && !cerrdefs.IsNotFound(err) && !isRemovalInProgress(err) {
		return fmt.Errorf("docker: remove sandbox container %s: %w", s.name, err)
	}
	s.mu.Lock()
	s.gone = true
	s.mu.Unlock()
	s.driver.logger.Debug("sandbox removed", "task", s.taskID, "container", s.name)
	return nil
}

package wire

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync/atomic"

	"github.com/jtarchie/pocketci/orchestra"
	"github.com/jtarchie/pocketci/proto/driverv1"
)

// The host's half of sandboxes (its twin is server_sandbox.go).

// clientSandboxDriver is the driver as an orchestra.SandboxDriver, when the
// plugin's driver is one.
type clientSandboxDriver struct{ d *clientDriver }

var (
	_ orchestra.SandboxDriver = clientSandboxDriver{}
	_ orchestra.Sandbox       = (*clientSandbox)(nil)
)

// StartSandbox starts a long-lived container for task in the plugin. The
// task's Command may be empty: the sandbox only runs what Exec gives it.
func (s clientSandboxDriver) StartSandbox(ctx context.Context, task orchestra.Task) (orchestra.Sandbox, error) {
	check := task
	if len(check.Command) == 0 {
		check.Command = []string{"sandbox"}
	}
	if err := orchestra.ValidateTask(check); err != nil {
		return nil, fmt.Errorf("plugin %s: StartSandbox: %w", s.d.client.name, err)
	}
	ref, err := s.d.client.rpc.StartSandbox(ctx, &driverv1.StartSandboxRequest{Driver: s.d.handle, Task: taskToProto(task)})
	if err != nil {
		return nil, s.d.wrap("StartSandbox", err)
	}
	if ref.GetSandbox() == 0 {
		return nil, s.d.client.invalidReply("StartSandbox", "sandbox handle 0")
	}
	ref.Driver = s.d.handle
	return &clientSandbox{d: s.d, ref: ref}, nil
}

// clientSandbox is a sandbox in the plugin.
type clientSandbox struct {
	d       *clientDriver
	ref     *driverv1.SandboxRef
	cleaned atomic.Bool
}

// ID is the sandbox's ID, as its driver gave it.
func (s *clientSandbox) ID() string { return s.ref.GetId() }

// Cleanup removes the sandbox. It is idempotent.
func (s *clientSandbox) Cleanup(ctx context.Context) error {
	if s.cleaned.Load() {
		return nil
	}
	if _, err := s.d.client.rpc.CleanupSandbox(ctx, s.ref); err != nil {
		return s.d.wrap("CleanupSandbox", err)
	}
	s.cleaned.Store(true)
	return nil
}

// Exec runs cmd in the sandbox with env and workDir for this call only:
// stdin, stdout and stderr stream live; cancelling ctx kills the command.
func (s *clientSandbox) Exec(ctx context.Context, cmd []string, env map[string]string, workDir string, stdin io.Reader, stdout, stderr io.Writer) (orchestra.ContainerStatus, error) {
	const op = "Exec"
	if s.cleaned.Load() {
		return nil, fmt.Errorf("plugin %s: %s: sandbox %q was cleaned up: %w", s.d.client.name, op, s.ID(), orchestra.ErrContainerNotFound)
	}
	if err := checkExec(cmd, env, workDir); err != nil {
		return nil, fmt.Errorf("plugin %s: %s: %w", s.d.client.name, op, err)
	}
	req := &driverv1.ExecRequest{Sandbox: s.ref, Command: cmd, Env: env, WorkDir: workDir, Stdin: stdin != nil, DeadlineUnixNano: deadlineOf(ctx)}
	conn, stop, err := s.d.client.dialBulk(ctx, &driverv1.BulkRequest{Kind: &driverv1.BulkRequest_Exec{Exec: req}})
	if err != nil {
		return nil, fmt.Errorf("plugin %s: %s: %w", s.d.client.name, op, err)
	}
	defer stop()
	defer conn.Close()
	if stdin != nil {
		go func() {
			fw := newFrameWriter(conn, true)
			_, rerr := io.Copy(fw.stream(frameData), stdin)
			if fw.err == nil {
				_ = fw.end(readError(rerr))
			}
		}()
	}
	code := -1
	outcome, err := readFrames(conn, func(kind byte, p []byte) error {
		switch kind {
		case frameData:
			return writeOutput(stdout, p)
		case frameStderr:
			return writeOutput(stderr, p)
		}
		if len(p) != 4 {
			return s.d.client.invalidReply(op, "an exit frame of %d bytes", len(p))
		}
		code = int(int32(binary.BigEndian.Uint32(p)))
		return s.d.client.checkExitCode(op, int64(code))
	})
	switch {
	case err != nil && ctx.Err() != nil:
		return nil, fmt.Errorf("plugin %s: %s: %w", s.d.client.name, op, ctx.Err())
	case err != nil:
		return nil, fmt.Errorf("plugin %s: %s: %w", s.d.client.name, op, err)
	case outcome != nil:
		return nil, s.d.wrap(op, outcome)
	case code < 0:
		return nil, s.d.client.invalidReply(op, "the command ended without an exit code")
	}
	return &containerStatus{done: true, exitCode: code}, nil
}

// checkExec refuses a command the plugin should never see.
func checkExec(cmd []string, env map[string]string, workDir string) error {
	if len(cmd) == 0 || cmd[0] == "" {
		return fmt.Errorf("the command is empty: %w", orchestra.ErrInvalidTask)
	}
	for i, a := range cmd {
		if strings.ContainsRune(a, 0) {
			return fmt.Errorf("the command's argument %d contains a NUL byte: %w", i, orchestra.ErrInvalidTask)
		}
	}
	for k, v := range env {
		if k == "" || strings.ContainsAny(k, "=\x00") || strings.ContainsRune(v, 0) {
			return fmt.Errorf("env key %q: empty, or with '=' or NUL: %w", k, orchestra.ErrInvalidTask)
		}
	}
	if strings.ContainsRune(workDir, 0) {
		return errors.New("workDir contains a NUL byte")
	}
	return nil
}

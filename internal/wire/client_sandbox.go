package wire

import (
	"context"
	"fmt"
	"io"
	"sync/atomic"

	"github.com/jtarchie/pocketci/internal/bulk"
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
	if err := orchestra.ValidateSandboxTask(task); err != nil {
		return nil, s.d.client.fail("StartSandbox", err)
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
	return s.d.cleanup(&s.cleaned, "CleanupSandbox", func() error {
		_, err := s.d.client.rpc.CleanupSandbox(ctx, s.ref)
		return err
	})
}

// Exec runs cmd in the sandbox with env and workDir for this call only:
// stdin, stdout and stderr stream live; cancelling ctx kills the command.
func (s *clientSandbox) Exec(ctx context.Context, cmd []string, env map[string]string, workDir string, stdin io.Reader, stdout, stderr io.Writer) (orchestra.ContainerStatus, error) {
	const op = "Exec"
	if s.cleaned.Load() {
		return nil, fmt.Errorf("plugin %s: %s: sandbox %q was cleaned up: %w", s.d.client.name, op, s.ID(), orchestra.ErrContainerNotFound)
	}
	if err := orchestra.ValidateExec(cmd, env, workDir); err != nil {
		return nil, s.d.client.fail(op, err)
	}
	req := &driverv1.ExecRequest{Sandbox: s.ref, Command: cmd, Env: env, WorkDir: workDir, Stdin: stdin != nil, DeadlineUnixNano: deadlineOf(ctx)}
	conn, stop, err := s.d.client.dialBulk(ctx, &driverv1.BulkRequest{Kind: &driverv1.BulkRequest_Exec{Exec: req}})
	if err != nil {
		return nil, s.d.client.fail(op, err)
	}
	defer stop()
	defer conn.Close()
	if stdin != nil {
		go func() { _ = sendStream(bulk.NewWriter(conn, true), stdin) }()
	}
	code := -1
	outcome, err := s.d.client.readOutput(op, conn, stdout, stderr, func(c int) { code = c })
	switch {
	case err != nil:
		return nil, s.d.client.streamError(ctx, op, err)
	case outcome != nil:
		return nil, s.d.wrap(op, outcome)
	case code < 0:
		return nil, s.d.client.invalidReply(op, "the command ended without an exit code")
	}
	return &containerStatus{done: true, exitCode: code}, nil
}

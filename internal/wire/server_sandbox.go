package wire

import (
	"context"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/jtarchie/pocketci/internal/bulk"

	"github.com/jtarchie/pocketci/orchestra"
	"github.com/jtarchie/pocketci/proto/driverv1"
)

// The plugin's half of sandboxes (its twin is client_sandbox.go): started
// and removed by gRPC calls; each command an exec connection on the bulk
// socket, carrying its stdin in and its output and exit code out.

// sandboxCleanupTimeout bounds the Cleanup of each sandbox a closing driver
// still has.
const sandboxCleanupTimeout = time.Minute

func (s *Server) StartSandbox(ctx context.Context, req *driverv1.StartSandboxRequest) (*driverv1.SandboxRef, error) {
	sd, inst, err := optional[orchestra.SandboxDriver](s, req.GetDriver())
	if err != nil {
		return nil, err
	}
	task := taskFromProto(req.GetTask())
	sb, err := sd.StartSandbox(ctx, task)
	if err == nil && sb == nil {
		err = fmt.Errorf("driver %s returned no sandbox and no error for task %q", s.name(), task.ID)
	}
	if err != nil {
		return nil, toStatus(err)
	}
	return &driverv1.SandboxRef{Driver: req.GetDriver(), Sandbox: inst.addSandbox(sb), Id: sb.ID()}, nil
}

func (s *Server) CleanupSandbox(ctx context.Context, ref *driverv1.SandboxRef) (*driverv1.CleanupResponse, error) {
	inst, err := s.instance(ref.GetDriver())
	if err != nil {
		return nil, err
	}
	sb, ok := inst.sandbox(ref.GetSandbox())
	if !ok {
		return &driverv1.CleanupResponse{}, nil // Cleanup is idempotent
	}
	if err := sb.Cleanup(ctx); err != nil {
		return nil, toStatus(err)
	}
	inst.dropSandbox(ref.GetSandbox())
	return &driverv1.CleanupResponse{}, nil
}

// serveExec runs one command in a sandbox: its stdin from the host's data
// frames, its output back as frames, then its exit code and the end. The
// host hanging up cancels the command.
func (s *Server) serveExec(conn net.Conn, req *driverv1.ExecRequest) {
	ctx, cancel := withDeadline(context.Background(), req.GetDeadlineUnixNano())
	defer cancel()
	fw := bulk.NewWriter(conn, true)
	var stdin io.Reader
	if req.GetStdin() {
		pr, pw := io.Pipe()
		defer pr.Close()
		stdin = pr
		go func() {
			in := bulk.NewReader(conn)
			_, err := io.Copy(pw, in)
			pw.CloseWithError(err)
			if err == nil {
				cancelOnHangUp(conn, cancel) // the input ended; the host sends nothing more
			} else {
				cancel()
			}
		}()
	} else {
		cancelOnHangUp(conn, cancel)
	}
	err := s.safely("Exec", func() error {
		code, err := s.exec(ctx, req, stdin, fw)
		if err != nil {
			return err
		}
		return fw.Exit(code)
	})
	_ = fw.End(toStatus(err))
}

func (s *Server) exec(ctx context.Context, req *driverv1.ExecRequest, stdin io.Reader, fw *bulk.Writer) (int, error) {
	inst, err := s.instance(req.GetSandbox().GetDriver())
	if err != nil {
		return 0, err
	}
	sb, ok := inst.sandbox(req.GetSandbox().GetSandbox())
	if !ok {
		return 0, fmt.Errorf("sandbox %q was cleaned up or never started: %w", req.GetSandbox().GetId(), orchestra.ErrContainerNotFound)
	}
	env := req.GetEnv()
	if env == nil {
		env = map[string]string{}
	}
	st, err := sb.Exec(ctx, req.GetCommand(), env, req.GetWorkDir(), stdin, fw.Stream(bulk.Data), fw.Stream(bulk.Stderr))
	if err != nil {
		return 0, err
	}
	if st == nil {
		return 0, fmt.Errorf("sandbox %q: Exec returned no status and no error", req.GetSandbox().GetId())
	}
	return st.ExitCode(), nil
}

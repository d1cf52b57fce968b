package wire

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/jtarchie/pocketci/internal/bulk"

	"github.com/jtarchie/pocketci/proto/driverv1"
)

// The plugin's half of the bulk socket (its twin is client_bulk.go): it
// accepts connections and serves what each asks for.

// ListenBulk opens the bulk socket in dir, which must be private to the
// host's user (go-plugin's socket directory), and serves it until l closes.
func (s *Server) ListenBulk(dir string) (net.Listener, error) {
	addr := filepath.Join(dir, fmt.Sprintf("bulk-%d.sock", os.Getpid()))
	l, err := net.Listen("unix", addr)
	if err != nil {
		return nil, fmt.Errorf("bulk socket: %w", err)
	}
	s.bulkAddr = addr
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			bulk.Tune(conn)
			go s.serveBulk(conn)
		}
	}()
	return l, nil
}

// serveBulk serves one connection. A driver panic on its goroutine must not
// kill the plugin; the host sees the connection end without its end frame.
func (s *Server) serveBulk(conn net.Conn) {
	defer conn.Close()
	req := &driverv1.BulkRequest{}
	if err := bulk.ReadMessage(conn, req, maxBulkRequest); err != nil {
		s.logger.Warn("bad bulk connection", "err", err)
		return
	}
	_ = s.safely("bulk", func() error { s.dispatch(conn, req); return nil })
}

func (s *Server) dispatch(conn net.Conn, req *driverv1.BulkRequest) {
	switch kind := req.GetKind().(type) {
	case *driverv1.BulkRequest_Stdin:
		s.serveStdin(conn, kind.Stdin)
	case *driverv1.BulkRequest_Logs:
		s.serveLogs(conn, kind.Logs)
	case *driverv1.BulkRequest_Run:
		s.serveRun(conn, kind.Run)
	case *driverv1.BulkRequest_VolumeIn:
		s.serveVolumeIn(conn, kind.VolumeIn)
	case *driverv1.BulkRequest_VolumeOut:
		s.serveVolumeOut(conn, kind.VolumeOut)
	case *driverv1.BulkRequest_Exec:
		s.serveExec(conn, kind.Exec)
	default:
		s.logger.Warn("bulk connection asks for nothing this plugin serves", "kind", fmt.Sprintf("%T", kind))
	}
}

// serveLogs writes the container's output as frames (with follow: live, and
// the exit code once it exited), then the end frame. The host cancels by
// hanging up.
func (s *Server) serveLogs(conn net.Conn, req *driverv1.LogsRequest) {
	ctx, cancel := withDeadline(context.Background(), req.GetDeadlineUnixNano())
	defer cancel()
	cancelOnHangUp(conn, cancel)
	fw := bulk.NewWriter(conn, req.GetFollow())
	err := s.safely("Logs", func() error {
		_, c, err := s.container(req.GetContainer())
		if err != nil {
			return err
		}
		if err := c.container.Logs(ctx, fw.Stream(bulk.Data), fw.Stream(bulk.Stderr), req.GetFollow()); err != nil {
			return err
		}
		if !req.GetFollow() {
			return nil
		}
		if code, ok := c.finalStatus(ctx); ok {
			return fw.Exit(code)
		}
		return nil
	})
	_ = fw.End(toStatus(err))
}

// cancelOnHangUp calls cancel when the peer closes conn (it sends nothing
// more on it), or when conn is closed here.
func cancelOnHangUp(conn net.Conn, cancel context.CancelFunc) {
	go func() {
		var b [1]byte
		_, _ = conn.Read(b[:])
		cancel()
	}()
}

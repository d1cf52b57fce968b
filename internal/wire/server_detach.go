package wire

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/jtarchie/pocketci/proto/driverv1"
)

// hostWatch is how a plugin knows its host is alive: at first its parent
// process; after Detach, nothing until a deadline; after Attach, a host
// process given by PID. go-plugin does not tell a plugin that its host died.
type hostWatch struct {
	mu       sync.Mutex
	parent   int       // the parent PID at start; 0 once attached elsewhere
	pid      int       // the host PID given by Attach
	deadline time.Time // while detached: when to give up waiting
	detached bool
}

// gone reports whether the host is gone, and why.
func (w *hostWatch) gone() (bool, string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case w.detached:
		if time.Now().After(w.deadline) {
			return true, "detached and no host attached in time"
		}
		return false, ""
	case w.pid != 0:
		if err := syscall.Kill(w.pid, 0); errors.Is(err, syscall.ESRCH) {
			return true, "attached host process is gone"
		}
		return false, ""
	default:
		if os.Getppid() != w.parent {
			return true, "host process is gone"
		}
		return false, ""
	}
}

// watchHost exits when the host is gone, closing every driver first unless
// keep is set.
func watchHost(ctx context.Context, srv *server, logger *slog.Logger, keep bool) {
	ticker := time.NewTicker(parentPollInterval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
			gone, why := srv.watch.gone()
			if !gone {
				continue
			}
			if keep {
				logger.Warn(why + ": closing the ephemeral drivers, leaving the others' resources to the platform, and exiting")
				srv.closeEphemeral()
			} else {
				logger.Warn(why + ": closing every driver and exiting")
				srv.closeAll()
			}
			removeSocketDir()
			os.Exit(1)
		}
	}
}

// Detach stops watching the host, which exits on purpose and will attach
// again within the timeout.
func (s *server) Detach(_ context.Context, req *driverv1.DetachRequest) (*driverv1.DetachResponse, error) {
	if req.GetTimeoutSeconds() <= 0 {
		return nil, status.Errorf(codes.InvalidArgument, "detach: timeout_seconds must be positive, got %d", req.GetTimeoutSeconds())
	}
	s.watch.mu.Lock()
	s.watch.detached = true
	s.watch.deadline = time.Now().Add(time.Duration(req.GetTimeoutSeconds()) * time.Second)
	s.watch.mu.Unlock()
	s.logger.Info("host detached; waiting for it to attach again", "timeout_seconds", req.GetTimeoutSeconds())
	return &driverv1.DetachResponse{}, nil
}

// Attach makes hostPID the host to watch and lists the open drivers, for the
// host to adopt.
func (s *server) Attach(_ context.Context, req *driverv1.AttachRequest) (*driverv1.AttachResponse, error) {
	pid := int(req.GetHostPid())
	if pid <= 0 || syscall.Kill(pid, 0) != nil {
		return nil, status.Errorf(codes.InvalidArgument, "attach: host PID %d is not a live process", pid)
	}
	s.watch.mu.Lock()
	s.watch.detached, s.watch.pid = false, pid
	s.watch.mu.Unlock()
	s.logOut.attach()
	resp := &driverv1.AttachResponse{}
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, inst := range s.drivers {
		resp.Drivers = append(resp.Drivers, &driverv1.OpenDriver{
			Driver: id, Namespace: inst.namespace, Name: inst.driver.Name(), ContainerFinder: true,
			Implements: inst.implements,
		})
	}
	s.logger.Info("host attached", "host_pid", pid, "drivers", len(resp.Drivers))
	return resp, nil
}

// logOutput is where the plugin's log records go: its original stderr,
// which the host that started it reads, until a host attaches; then
// os.Stderr as go-plugin set it after the handshake, which go-plugin streams
// to whichever host is connected.
type logOutput struct {
	mu sync.Mutex
	w  *os.File
}

func (o *logOutput) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.w.Write(p)
}

func (o *logOutput) attach() {
	o.mu.Lock()
	o.w = os.Stderr
	o.mu.Unlock()
}

// removeSocketDir removes the private directory go-plugin gave the plugin
// for its sockets, and the host's directory around it when that is left
// empty: the host that would have removed them is gone.
func removeSocketDir() {
	dir := os.Getenv("PLUGIN_UNIX_SOCKET_DIR")
	if dir == "" {
		return
	}
	os.RemoveAll(dir)
	os.Remove(filepath.Dir(dir))
}

package wire

import (
	"context"
	"errors"
	"os"
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

// HostGone reports whether the host is gone, and why.
func (s *Server) HostGone() (bool, string) {
	w := &s.watch
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

// Detach stops watching the host, which exits on purpose and will attach
// again within the timeout.
func (s *Server) Detach(_ context.Context, req *driverv1.DetachRequest) (*driverv1.DetachResponse, error) {
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
func (s *Server) Attach(_ context.Context, req *driverv1.AttachRequest) (*driverv1.AttachResponse, error) {
	pid := int(req.GetHostPid())
	if pid <= 0 || syscall.Kill(pid, 0) != nil {
		return nil, status.Errorf(codes.InvalidArgument, "attach: host PID %d is not a live process", pid)
	}
	s.watch.mu.Lock()
	s.watch.detached, s.watch.pid = false, pid
	s.watch.mu.Unlock()
	if s.OnAttach != nil {
		s.OnAttach()
	}
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

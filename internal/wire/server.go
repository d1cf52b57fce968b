package wire

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"reflect"
	"runtime"
	"runtime/debug"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/jtarchie/pocketci/orchestra"
	"github.com/jtarchie/pocketci/proto/driverv1"
)

// Server is the plugin half of the protocol: it serves the driver instances
// of one plugin process. Its twin on the host side is Client.
type Server struct {
	driverv1.UnimplementedDriverServer

	provider orchestra.DriverProvider
	logger   *slog.Logger

	watch hostWatch
	// OnAttach, when set before serving, is called when a host attaches.
	OnAttach func()
	// bulkAddr is the bulk socket's path, once it listens (server_bulk.go).
	bulkAddr string

	stdins *stdinRegistry

	mu      sync.Mutex
	nextID  uint64
	drivers map[uint64]*instance
}

var _ driverv1.DriverServer = (*Server)(nil)

// NewServer is the plugin half for provider; its drivers log to logger.
func NewServer(provider orchestra.DriverProvider, logger *slog.Logger) *Server {
	return &Server{
		provider: provider,
		logger:   logger,
		drivers:  map[uint64]*instance{},
		stdins:   newStdinRegistry(),
		watch:    hostWatch{parent: os.Getppid()},
	}
}

// PluginVersion is the plugin binary's module version, as Info reports it.
func PluginVersion() string {
	if info, ok := debug.ReadBuildInfo(); ok && info.Main.Version != "" {
		return info.Main.Version
	}
	return "(devel)"
}

// NewGRPCServer is a gRPC server with opts whose unary calls turn a driver
// panic into an error for the host (see safely).
func (s *Server) NewGRPCServer(opts []grpc.ServerOption) *grpc.Server {
	recoverUnary := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
		err = s.safely(info.FullMethod, func() (err error) {
			resp, err = handler(ctx, req)
			return err
		})
		return resp, err
	}
	return grpc.NewServer(append(opts, grpc.ChainUnaryInterceptor(recoverUnary))...)
}

// safely runs fn, a panic in it logged and made an error for the host, so
// that the plugin lives on.
func (s *Server) safely(method string, fn func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			s.logger.Error("driver panicked", "method", method, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			err = status.Errorf(codes.Internal, "driver panicked in %s: %v", method, r)
		}
	}()
	return fn()
}

func (s *Server) name() string { return s.provider.Name() }

func (s *Server) Info(context.Context, *driverv1.InfoRequest) (*driverv1.InfoResponse, error) {
	return &driverv1.InfoResponse{
		Name:            s.name(),
		PluginVersion:   PluginVersion(),
		SdkVersion:      SDKVersion,
		ProtocolVersion: ProtocolVersion,
		Capabilities:    sdkCapabilities,
		BulkAddr:        s.bulkAddr,
		Goroutines:      int64(runtime.NumGoroutine()),
	}, nil
}

func (s *Server) CheckConfig(_ context.Context, req *driverv1.CheckConfigRequest) (*driverv1.CheckConfigResponse, error) {
	if _, err := s.provider.UnmarshalConfig(req.GetConfig()); err != nil {
		return nil, toStatus(err)
	}
	return &driverv1.CheckConfigResponse{}, nil
}

// errOldHost refuses a host that does not say its protocol: one before 1.4,
// which would not carry this SDK's Run, stdin and config.
var errOldHost = status.Errorf(codes.FailedPrecondition,
	"this plugin speaks protocol %s and needs a host of protocol %s or later (orchestra %s or later)", ProtocolVersion, ProtocolVersion, SDKVersion)

func (s *Server) Open(ctx context.Context, req *driverv1.OpenRequest) (*driverv1.OpenResponse, error) {
	if req.GetHostProtocolVersion() == "" {
		return nil, errOldHost
	}
	ns := req.GetNamespace()
	cfg, err := s.provider.UnmarshalConfig(req.GetConfig())
	var driver orchestra.Driver
	if err == nil {
		driver, err = s.provider.NewDriver(ctx, ns, cfg, s.logger.With("namespace", ns))
	}
	if err != nil {
		return nil, toStatus(fmt.Errorf("open driver for namespace %q: %w", ns, err))
	}
	if driver == nil {
		return nil, status.Errorf(codes.Internal, "driver %s returned no driver and no error for namespace %q", s.name(), ns)
	}
	inst := newInstance(driver, ns, req.GetEphemeral())
	s.mu.Lock()
	s.nextID++
	id := s.nextID
	s.drivers[id] = inst
	s.mu.Unlock()
	return &driverv1.OpenResponse{Driver: id, Name: driver.Name(), ContainerFinder: true, Implements: inst.implements}, nil
}

// implementsOf lists the optional orchestra interfaces driver implements,
// for OpenResponse.implements.
func implementsOf(driver orchestra.Driver) []string {
	var out []string
	if _, ok := driver.(orchestra.VolumeDataAccessor); ok {
		out = append(out, ImplementsVolumeData)
	}
	if _, ok := driver.(orchestra.SandboxDriver); ok {
		out = append(out, ImplementsSandbox)
	}
	return out
}

func (s *Server) Close(_ context.Context, req *driverv1.CloseRequest) (*driverv1.CloseResponse, error) {
	s.mu.Lock()
	inst, ok := s.drivers[req.GetDriver()]
	delete(s.drivers, req.GetDriver())
	s.mu.Unlock()
	if !ok {
		// Close is idempotent: a driver closed before is closed still.
		return &driverv1.CloseResponse{}, nil
	}
	return &driverv1.CloseResponse{}, toStatus(inst.close())
}

// CloseAll closes every open driver instance; the plugin calls it when its
// host is gone.
func (s *Server) CloseAll() { s.closeWhere(func(*instance) bool { return true }) }

// CloseEphemeral closes the driver instances opened as ephemeral; a plugin
// that leaves its resources on host exit calls it when its host is gone.
func (s *Server) CloseEphemeral() { s.closeWhere(func(i *instance) bool { return i.ephemeral }) }

func (s *Server) closeWhere(match func(*instance) bool) {
	s.mu.Lock()
	var closing []*instance
	for id, inst := range s.drivers {
		if match(inst) {
			closing = append(closing, inst)
			delete(s.drivers, id)
		}
	}
	s.mu.Unlock()
	for _, inst := range closing {
		if err := inst.close(); err != nil {
			s.logger.Error("close driver", "namespace", inst.namespace, "err", err)
		}
	}
}

func (s *Server) instance(id uint64) (*instance, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	inst, ok := s.drivers[id]
	if !ok {
		return nil, toStatus(fmt.Errorf("driver handle %d is not open: %w", id, orchestra.ErrClosed))
	}
	return inst, nil
}

// optional is the driver of instance handle as T, one of its optional
// interfaces.
func optional[T any](s *Server, handle uint64) (T, *instance, error) {
	var none T
	inst, err := s.instance(handle)
	if err != nil {
		return none, nil, err
	}
	v, ok := inst.driver.(T)
	if !ok {
		return none, nil, toStatus(fmt.Errorf("driver %s does not implement %s: %w", s.name(), reflect.TypeFor[T](), errors.ErrUnsupported))
	}
	return v, inst, nil
}

func (s *Server) container(ref *driverv1.ContainerRef) (*instance, *served, error) {
	inst, err := s.instance(ref.GetDriver())
	if err != nil {
		return nil, nil, err
	}
	c, err := inst.lookup(ref)
	if err != nil {
		return nil, nil, toStatus(err)
	}
	return inst, c, nil
}

// errNoContainer is a driver that returned neither a container nor an error.
func (s *Server) errNoContainer(what string) error {
	return status.Errorf(codes.Internal, "driver %s returned no container and no error for %s", s.name(), what)
}

package wire

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/jtarchie/pocketci/orchestra"
	"github.com/jtarchie/pocketci/proto/driverv1"
)

// server is the plugin half of the protocol: it serves the driver instances
// of one plugin process. Its twin on the host side is client.go.
type server struct {
	driverv1.UnimplementedDriverServer

	provider orchestra.DriverProvider
	version  string
	logger   *slog.Logger

	watch  hostWatch
	logOut *logOutput
	// bulkAddr is the bulk socket's path, once it listens (server_bulk.go).
	bulkAddr string

	stdins *stdinRegistry

	mu      sync.Mutex
	nextID  uint64
	drivers map[uint64]*instance
}

var _ driverv1.DriverServer = (*server)(nil)

func newServer(provider orchestra.DriverProvider, version string, logger *slog.Logger) *server {
	return &server{
		provider: provider,
		version:  version,
		logger:   logger,
		drivers:  map[uint64]*instance{},
		stdins:   newStdinRegistry(),
		watch:    hostWatch{parent: os.Getppid()},
		logOut:   &logOutput{w: os.Stderr},
	}
}

func (s *server) name() string { return s.provider.Name() }

func (s *server) Info(context.Context, *driverv1.InfoRequest) (*driverv1.InfoResponse, error) {
	return &driverv1.InfoResponse{
		Name:            s.name(),
		PluginVersion:   s.version,
		SdkVersion:      SDKVersion,
		ProtocolVersion: ProtocolVersion,
		Capabilities:    sdkCapabilities,
		BulkAddr:        s.bulkAddr,
		Goroutines:      int64(runtime.NumGoroutine()),
	}, nil
}

func (s *server) CheckConfig(_ context.Context, req *driverv1.CheckConfigRequest) (*driverv1.CheckConfigResponse, error) {
	if _, err := s.provider.UnmarshalConfig(req.GetConfig()); err != nil {
		return nil, toStatus(err)
	}
	return &driverv1.CheckConfigResponse{}, nil
}

// errOldHost refuses a host that does not say its protocol: one before 1.4,
// which would not carry this SDK's Run, stdin and config.
var errOldHost = status.Errorf(codes.FailedPrecondition,
	"this plugin speaks protocol %s and needs a host of protocol %s or later (orchestra %s or later)", ProtocolVersion, ProtocolVersion, SDKVersion)

func (s *server) Open(ctx context.Context, req *driverv1.OpenRequest) (*driverv1.OpenResponse, error) {
	if req.GetHostProtocolVersion() == "" {
		return nil, errOldHost
	}
	ns := req.GetNamespace()
	cfg, err := s.provider.UnmarshalConfig(req.GetConfig())
	if err != nil {
		return nil, toStatus(fmt.Errorf("open driver for namespace %q: %w", ns, err))
	}
	driver, err := s.provider.NewDriver(ctx, ns, cfg, s.logger.With("namespace", ns))
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

func (s *server) Close(_ context.Context, req *driverv1.CloseRequest) (*driverv1.CloseResponse, error) {
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

// closeAll closes every open driver instance; the plugin calls it when its
// host is gone.
func (s *server) closeAll() { s.closeWhere(func(*instance) bool { return true }) }

// closeEphemeral closes the driver instances opened as ephemeral; a plugin
// that leaves its resources on host exit calls it when its host is gone.
func (s *server) closeEphemeral() { s.closeWhere(func(i *instance) bool { return i.ephemeral }) }

func (s *server) closeWhere(match func(*instance) bool) {
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

func (s *server) instance(id uint64) (*instance, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	inst, ok := s.drivers[id]
	if !ok {
		return nil, toStatus(fmt.Errorf("driver handle %d is not open: %w", id, orchestra.ErrClosed))
	}
	return inst, nil
}

func (s *server) container(ref *driverv1.ContainerRef) (*instance, *served, error) {
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

// safely runs fn, a panic in it made an error: the interceptors recover
// panics in a handler's own goroutine only, and the bulk socket has none.
func (s *server) safely(method string, fn func() error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = panicError(s.logger, method, p)
		}
	}()
	return fn()
}

// errNoContainer is a driver that returned neither a container nor an error.
func (s *server) errNoContainer(what string) error {
	return status.Errorf(codes.Internal, "driver %s returned no container and no error for %s", s.name(), what)
}

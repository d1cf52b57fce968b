package wire

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"strconv"
	"sync"

	"google.golang.org/grpc/codes"
	_ "google.golang.org/grpc/encoding/proto" // registers the codec stdinCodec wraps
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/jtarchie/pocketci/orchestra"
	"github.com/jtarchie/pocketci/pluginsdk/proto/driverv1"
)

// server is the plugin half of the protocol: it serves the driver instances
// of one plugin process. Its twin on the host side is client.go.
type server struct {
	driverv1.UnimplementedDriverServer

	name    string
	version string
	init    orchestra.InitFunc
	logger  *slog.Logger

	watch  hostWatch
	logOut *logOutput
	// bulkAddr is the bulk socket's path, when it listens (bulk_server.go).
	bulkAddr string

	stdins *stdinRegistry

	mu      sync.Mutex
	nextID  uint64
	drivers map[uint64]*instance
}

// NewServer returns the driver service that Serve registers, for a program
// that runs its own gRPC server (a test, or a host embedding a plugin). Most
// plugins want Serve.
func NewServer(name string, init orchestra.InitFunc, logger *slog.Logger) driverv1.DriverServer {
	return newServer(name, version(), init, logger)
}

func newServer(name, version string, init orchestra.InitFunc, logger *slog.Logger) *server {
	return &server{
		name:    name,
		version: version,
		init:    init,
		logger:  logger,
		drivers: map[uint64]*instance{},
		stdins:  newStdinRegistry(),
		watch:   hostWatch{parent: os.Getppid()},
		logOut:  &logOutput{w: os.Stderr},
	}
}

func (s *server) Info(context.Context, *driverv1.InfoRequest) (*driverv1.InfoResponse, error) {
	return &driverv1.InfoResponse{
		Name:            s.name,
		PluginVersion:   s.version,
		SdkVersion:      SDKVersion,
		ProtocolVersion: ProtocolVersion,
		Capabilities:    s.capabilities(),
		BulkAddr:        s.bulkAddr,
		Goroutines:      int64(runtime.NumGoroutine()),
	}, nil
}

// capabilities are the SDK's, with "bulk" when the bulk socket listens.
func (s *server) capabilities() []string {
	if s.bulkAddr == "" {
		return sdkCapabilities
	}
	return append(append([]string(nil), sdkCapabilities...), CapabilityBulk)
}

func (s *server) Open(_ context.Context, req *driverv1.OpenRequest) (*driverv1.OpenResponse, error) {
	logger := s.logger.With("namespace", req.GetNamespace())
	driver, err := s.init(req.GetNamespace(), logger)
	if err != nil {
		return nil, toStatus(fmt.Errorf("open driver for namespace %q: %w", req.GetNamespace(), err))
	}
	if driver == nil {
		return nil, status.Errorf(codes.Internal, "driver init for namespace %q returned no driver and no error", req.GetNamespace())
	}
	inst := newInstance(driver, req.GetNamespace())
	inst.ephemeral = req.GetEphemeral()
	s.mu.Lock()
	s.nextID++
	id := s.nextID
	s.drivers[id] = inst
	s.mu.Unlock()
	return &driverv1.OpenResponse{Driver: id, Name: driver.Name(), ContainerFinder: inst.finder, Implements: implements(inst.finder)}, nil
}

// implements lists the optional interfaces a driver implements, for
// OpenResponse.implements.
func implements(finder bool) []string {
	if finder {
		return []string{"ContainerFinder"}
	}
	return nil
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
func (s *server) closeAll() {
	s.mu.Lock()
	drivers := s.drivers
	s.drivers = map[uint64]*instance{}
	s.mu.Unlock()
	for id, inst := range drivers {
		if err := inst.close(); err != nil {
			s.logger.Error("close driver", "driver", id, "err", err)
		}
	}
}

// closeEphemeral closes the driver instances opened as ephemeral; a plugin
// that leaves its resources on host exit calls it when its host is gone.
func (s *server) closeEphemeral() {
	s.mu.Lock()
	var closing []*instance
	for id, inst := range s.drivers {
		if inst.ephemeral {
			closing = append(closing, inst)
			delete(s.drivers, id)
		}
	}
	s.mu.Unlock()
	for _, inst := range closing {
		if err := inst.close(); err != nil {
			s.logger.Error("close ephemeral driver", "namespace", inst.namespace, "err", err)
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

func (s *server) RunContainer(ctx context.Context, req *driverv1.RunContainerRequest) (*driverv1.RunContainerResponse, error) {
	inst, err := s.instance(req.GetDriver())
	if err != nil {
		return nil, err
	}
	task := taskFromProto(req.GetTask())
	var pipe *stdinPipe
	if token := req.GetStdinToken(); token != "" {
		pipe = s.stdins.claim(token)
		task.Stdin = pipe.r
	}
	container, err := inst.driver.RunContainer(ctx, task)
	if err == nil && container == nil {
		err = status.Errorf(codes.Internal, "driver %s returned no container and no error for task %q", s.name, task.ID)
	}
	if err != nil {
		if pipe != nil {
			pipe.close(err)
		}
		return nil, toStatus(err)
	}
	return inst.serve(container, task.ID, pipe).response(), nil
}

func (s *server) GetContainer(ctx context.Context, req *driverv1.GetContainerRequest) (*driverv1.RunContainerResponse, error) {
	inst, err := s.instance(req.GetDriver())
	if err != nil {
		return nil, err
	}
	finder, ok := inst.driver.(orchestra.ContainerFinder)
	if !ok {
		return nil, status.Errorf(codes.Unimplemented, "driver %s does not implement orchestra.ContainerFinder", s.name)
	}
	container, err := finder.GetContainer(ctx, req.GetTaskId())
	if err == nil && container == nil {
		err = status.Errorf(codes.Internal, "driver %s returned no container and no error for task %q", s.name, req.GetTaskId())
	}
	if err != nil {
		return nil, toStatus(err)
	}
	return inst.serve(container, req.GetTaskId(), nil).response(), nil
}

func (s *server) Status(ctx context.Context, ref *driverv1.ContainerRef) (*driverv1.StatusResponse, error) {
	_, c, err := s.container(ref)
	if err != nil {
		return nil, err
	}
	st, err := c.container.Status(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	if st == nil {
		return nil, status.Errorf(codes.Internal, "driver %s returned a nil status for task %q", s.name, c.taskID)
	}
	return &driverv1.StatusResponse{Done: st.IsDone(), ExitCode: int32(st.ExitCode())}, nil
}

func (s *server) Logs(req *driverv1.LogsRequest, stream driverv1.Driver_LogsServer) error {
	out := newChunkSender(stream, req.GetFollow())
	stdout, stderr := out.writer(driverv1.LogChunk_STREAM_STDOUT), out.writer(driverv1.LogChunk_STREAM_STDERR)
	c, err := s.logs(stream.Context(), req, stdout, stderr)
	if ferr := out.flush(); err == nil {
		err = ferr
	}
	if err == nil && req.GetFollow() {
		trailStatus(stream, c)
	}
	return toStatus(err)
}

// logs writes the output of the container req names to stdout and stderr:
// Logs, or FollowLogs when req.Follow is set. Both the gRPC stream and the
// bulk socket serve logs through it.
func (s *server) logs(ctx context.Context, req *driverv1.LogsRequest, stdout, stderr io.Writer) (*served, error) {
	_, c, err := s.container(req.GetContainer())
	if err != nil {
		return nil, err
	}
	if !req.GetFollow() {
		return c, c.container.Logs(ctx, stdout, stderr)
	}
	follower, ok := c.container.(orchestra.LogFollower)
	if !ok {
		return nil, status.Errorf(codes.Unimplemented, "container of task %q does not implement orchestra.LogFollower", c.taskID)
	}
	return c, follower.FollowLogs(ctx, stdout, stderr)
}

// statusTrailer is the trailer key in which a FollowLogs stream carries the
// exit code of the container it followed to its end. The host caches it as
// the final status, which saves the Status call that usually comes next.
// Hosts that do not know the key ignore it.
const statusTrailer = "pocketci-exit-code"

// trailStatus puts the container's final status in the stream's trailer. A
// followed container has exited, so this is the Status the host would ask
// for next; when the driver does not report it done, nothing is sent.
func trailStatus(stream driverv1.Driver_LogsServer, c *served) {
	if code, ok := c.finalStatus(stream.Context()); ok {
		stream.SetTrailer(metadata.Pairs(statusTrailer, strconv.Itoa(code)))
	}
}

// finalStatus is the exit code of a container that is done.
func (c *served) finalStatus(ctx context.Context) (int, bool) {
	st, err := c.container.Status(ctx)
	if err != nil || st == nil || !st.IsDone() {
		return 0, false
	}
	return st.ExitCode(), true
}

// Cleanup cleans the container up and, once that succeeded, drops its
// handle and its stdin. A failed Cleanup keeps the handle, so it can be
// tried again.
func (s *server) Cleanup(ctx context.Context, ref *driverv1.ContainerRef) (*driverv1.CleanupResponse, error) {
	inst, c, err := s.container(ref)
	if err != nil {
		return nil, err
	}
	if c.stdin != nil {
		c.stdin.close(fmt.Errorf("task %q cleaned up", c.taskID))
	}
	if err := c.container.Cleanup(ctx); err != nil {
		return nil, toStatus(err)
	}
	inst.drop(c)
	return &driverv1.CleanupResponse{}, nil
}

func (s *server) CreateVolume(ctx context.Context, req *driverv1.CreateVolumeRequest) (*driverv1.VolumeRef, error) {
	inst, err := s.instance(req.GetDriver())
	if err != nil {
		return nil, err
	}
	vol, err := inst.driver.CreateVolume(ctx, req.GetName(), int(req.GetSize()))
	if err == nil && vol == nil {
		err = status.Errorf(codes.Internal, "driver %s returned no volume and no error for %q", s.name, req.GetName())
	}
	if err != nil {
		return nil, toStatus(err)
	}
	v := inst.addVolume(vol)
	return &driverv1.VolumeRef{Volume: v.id, Name: vol.Name()}, nil
}

// CleanupVolume removes the volume and, once that succeeded, drops its
// handle.
func (s *server) CleanupVolume(ctx context.Context, ref *driverv1.VolumeRef) (*driverv1.CleanupResponse, error) {
	inst, err := s.instance(ref.GetDriver())
	if err != nil {
		return nil, err
	}
	v, err := inst.lookupVolume(ref)
	if err != nil {
		return nil, toStatus(err)
	}
	if err := v.volume.Cleanup(ctx); err != nil {
		return nil, toStatus(err)
	}
	inst.dropVolume(v)
	return &driverv1.CleanupResponse{}, nil
}

package wire

import (
	"context"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/jtarchie/pocketci/proto/driverv1"
)

// The plugin's half of the calls on containers and volumes (its twin is
// client_container.go and client_volume.go). RunContainer itself is a Run
// stream (server_run.go).

func (s *Server) GetContainer(ctx context.Context, req *driverv1.GetContainerRequest) (*driverv1.RunContainerResponse, error) {
	inst, err := s.instance(req.GetDriver())
	if err != nil {
		return nil, err
	}
	id := req.GetContainerId()
	container, err := inst.driver.GetContainer(ctx, id)
	if err == nil && container == nil {
		err = s.errNoContainer(fmt.Sprintf("container ID %q", id))
	}
	if err != nil {
		return nil, toStatus(err)
	}
	return inst.serve(container, "", nil).response(), nil
}

func (s *Server) Status(ctx context.Context, ref *driverv1.ContainerRef) (*driverv1.StatusResponse, error) {
	_, c, err := s.container(ref)
	if err != nil {
		return nil, err
	}
	st, err := c.container.Status(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	if st == nil {
		return nil, status.Errorf(codes.Internal, "driver %s returned a nil status for container %q", s.name(), c.id)
	}
	return &driverv1.StatusResponse{Done: st.IsDone(), ExitCode: int32(st.ExitCode())}, nil
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
func (s *Server) Cleanup(ctx context.Context, ref *driverv1.ContainerRef) (*driverv1.CleanupResponse, error) {
	inst, c, err := s.container(ref)
	if err != nil {
		return nil, err
	}
	if c.stdin != nil {
		c.stdin.close(fmt.Errorf("container %q cleaned up", c.id))
	}
	if err := c.container.Cleanup(ctx); err != nil {
		return nil, toStatus(err)
	}
	inst.drop(c)
	return &driverv1.CleanupResponse{}, nil
}

func (s *Server) CreateVolume(ctx context.Context, req *driverv1.CreateVolumeRequest) (*driverv1.VolumeRef, error) {
	inst, err := s.instance(req.GetDriver())
	if err != nil {
		return nil, err
	}
	vol, err := inst.driver.CreateVolume(ctx, req.GetName(), int(req.GetSize()))
	if err == nil && vol == nil {
		err = status.Errorf(codes.Internal, "driver %s returned no volume and no error for %q", s.name(), req.GetName())
	}
	if err != nil {
		return nil, toStatus(err)
	}
	v := inst.addVolume(vol)
	return &driverv1.VolumeRef{Volume: v.id, Name: vol.Name(), Path: vol.Path()}, nil
}

// CleanupVolume removes the volume and, once that succeeded, drops its
// handle.
func (s *Server) CleanupVolume(ctx context.Context, ref *driverv1.VolumeRef) (*driverv1.CleanupResponse, error) {
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

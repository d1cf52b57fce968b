package wire

import (
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/jtarchie/pocketci/orchestra"
	"github.com/jtarchie/pocketci/proto/driverv1"
)

// harness connects both halves in this process, as pluginproc.Harness does
// (which this package's tests cannot import), and also returns the server.
func harness(provider orchestra.DriverProvider, logger *slog.Logger) (*Client, *Server, func(), error) {
	dir, err := os.MkdirTemp("", "pocketci-wiretest-")
	if err != nil {
		return nil, nil, nil, err
	}
	srv := NewServer(provider, logger)
	gs := srv.NewGRPCServer(nil)
	driverv1.RegisterDriverServer(gs, srv)
	lis, err := net.Listen("unix", filepath.Join(dir, "grpc.sock"))
	if err != nil {
		return nil, nil, nil, err
	}
	go gs.Serve(lis)
	bulkLis, err := srv.ListenBulk(dir)
	if err != nil {
		return nil, nil, nil, err
	}
	conn, err := grpc.NewClient("unix://"+lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, nil, nil, err
	}
	stop := func() {
		srv.CloseAll()
		conn.Close()
		gs.Stop()
		bulkLis.Close()
		os.RemoveAll(dir)
	}
	c := NewClient(provider.Name(), driverv1.NewDriverClient(conn))
	info, err := c.Info(context.Background())
	if err == nil {
		err = c.Accept(info, dir)
	}
	if err != nil {
		stop()
		return nil, nil, nil, err
	}
	return c, srv, stop, nil
}

// size is the number of entries, for tests.
func (inst *instance) size() (containers, tasks, volumes int) {
	inst.mu.Lock()
	defer inst.mu.Unlock()
	return len(inst.containers.byNum), len(inst.containers.byKey), len(inst.volumes.byNum) + len(inst.volumes.byKey)
}

// len is the number of entries, for tests.
func (r *stdinRegistry) len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.pipes)
}

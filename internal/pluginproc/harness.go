package pluginproc

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/jtarchie/pocketci/internal/wire"
	"github.com/jtarchie/pocketci/orchestra"
	"github.com/jtarchie/pocketci/proto/driverv1"
)

// Harness serves provider's driver as a plugin inside this process, the way
// Serve does (the same gRPC server, the bulk socket), and connects the
// host's client to it over unix sockets in a new private directory. It is
// pluginsdk/sdktest's engine. stop closes every driver still open, both
// sockets and the directory.
func Harness(provider orchestra.DriverProvider, logger *slog.Logger) (*wire.Client, func(), error) {
	dir, err := os.MkdirTemp("", "pocketci-sdktest-")
	if err != nil {
		return nil, nil, fmt.Errorf("harness: %w", err)
	}
	srv := wire.NewServer(provider, logger)
	gs := srv.NewGRPCServer(nil)
	driverv1.RegisterDriverServer(gs, srv)
	var conn *grpc.ClientConn
	var bulk net.Listener
	stop := func() {
		srv.CloseAll()
		if conn != nil {
			conn.Close()
		}
		gs.Stop()
		if bulk != nil {
			bulk.Close()
		}
		os.RemoveAll(dir)
	}
	lis, err := net.Listen("unix", filepath.Join(dir, "grpc.sock"))
	if err == nil {
		go gs.Serve(lis)
		bulk, err = srv.ListenBulk(dir)
	}
	if err == nil {
		conn, err = grpc.NewClient("unix://"+lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	}
	if err != nil {
		stop()
		return nil, nil, fmt.Errorf("harness: %w", err)
	}
	c := wire.NewClient(provider.Name(), driverv1.NewDriverClient(conn))
	info, err := c.Info(context.Background())
	if err == nil {
		err = c.Accept(info, dir)
	}
	if err != nil {
		stop()
		return nil, nil, err
	}
	return c, stop, nil
}

package wire

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/jtarchie/pocketci/orchestra"
	"github.com/jtarchie/pocketci/proto/driverv1"
)

// Harness serves provider's driver as a plugin inside this process, the way
// Serve does (the same gRPC server options, the bulk socket), and
// connects the host's client to it over unix sockets in a new private
// directory. It is pluginsdk/sdktest's engine. stop closes every driver
// still open, both sockets and the directory.
func Harness(provider orchestra.DriverProvider, logger *slog.Logger) (*Client, func(), error) {
	c, _, stop, err := harness(provider, logger)
	return c, stop, err
}

func harness(provider orchestra.DriverProvider, logger *slog.Logger) (*Client, *server, func(), error) {
	dir, err := os.MkdirTemp("", "pocketci-sdktest-")
	if err != nil {
		return nil, nil, nil, fmt.Errorf("harness: %w", err)
	}
	name := provider.Name()
	srv := newServer(provider, version(), logger)
	lis, err := net.Listen("unix", filepath.Join(dir, "grpc.sock"))
	if err != nil {
		os.RemoveAll(dir)
		return nil, nil, nil, fmt.Errorf("harness: %w", err)
	}
	gs := grpc.NewServer(serverOptions(logger)...)
	driverv1.RegisterDriverServer(gs, srv)
	go gs.Serve(lis)
	bulk, err := srv.listenBulk(dir)
	if err != nil {
		gs.Stop()
		os.RemoveAll(dir)
		return nil, nil, nil, fmt.Errorf("harness: %w", err)
	}
	conn, err := grpc.NewClient("unix://"+lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		bulk.Close()
		gs.Stop()
		os.RemoveAll(dir)
		return nil, nil, nil, fmt.Errorf("harness: %w", err)
	}
	stop := func() {
		srv.closeAll()
		conn.Close()
		gs.Stop()
		bulk.Close()
		os.RemoveAll(dir)
	}
	c := NewClient(name, driverv1.NewDriverClient(conn))
	info, err := c.Info(context.Background())
	if err != nil {
		stop()
		return nil, nil, nil, err
	}
	if err := c.Accept(info, dir); err != nil {
		stop()
		return nil, nil, nil, err
	}
	return c, srv, stop, nil
}

// Command fakeplugin is a test fixture: the native driver served as a plugin
// whose misbehaviour is chosen by environment variables.
//
//	FAKEPLUGIN_NAME    the name it reports (default: from its file name)
//	FAKEPLUGIN_STDOUT  printed to stdout before Serve, as a careless init might
//	FAKEPLUGIN_MODE    hang:      RunContainer of task "hang" and Close never return
//	                   print:     the driver prints to stdout when opened
//	                   oversize:  Info answers with a 5 MiB name
//	                   protocol2: serves only protocol major version 2
//	                   v1.0:      speaks protocol 1.0, the minor before Detach and Attach
//	                   v1.2:      speaks protocol 1.2, the minor before Run
//	                   exit:      RunContainer of task "exit" starts a child holding the
//	                              plugin's stdout and stderr, then the plugin exits
//	                   nohandshake: starts such a child and never completes its handshake
//	                   flood:     writes FAKEPLUGIN_FLOOD bytes to stderr, no newline, then serves
//	                   escapes:   Info strings carry terminal escapes, newlines and 100 KiB
//	                   deaf:      ignores SIGHUP and never watches its host
//	                   misnamed:  the driver's Name() is not the name it is served under
//	FAKEPLUGIN_PIDFILE where the child of "exit" and "nohandshake" writes its PID
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/jtarchie/pocketci/internal/wire"
	"github.com/jtarchie/pocketci/orchestra"
	"github.com/jtarchie/pocketci/plugins/native"
	"github.com/jtarchie/pocketci/pluginsdk"
	"github.com/jtarchie/pocketci/proto/driverv1"
)

func main() {
	name := os.Getenv("FAKEPLUGIN_NAME")
	if name == "" {
		name = strings.TrimPrefix(filepath.Base(os.Args[0]), "pocketci-driver-")
	}
	if s := os.Getenv("FAKEPLUGIN_STDOUT"); s != "" {
		fmt.Println(s)
		fmt.Println(s)
	}
	switch os.Getenv("FAKEPLUGIN_MODE") {
	case "exit":
		pluginsdk.Serve(name, func(ns string, l *slog.Logger) (orchestra.Driver, error) {
			d, err := native.New(ns, l)
			return &exiting{d}, err
		})
	case "nohandshake":
		holdPipes()
		select {}
	case "flood":
		flood(os.Getenv("FAKEPLUGIN_FLOOD"))
		pluginsdk.Serve(name, native.New)
	case "escapes":
		logger := slog.New(pluginsdk.NewLogHandler(os.Stderr, slog.LevelInfo))
		serveRaw(wire.ProtocolMajor, escapes{wire.NewServer(name, native.New, logger)})
	case "deaf":
		signal.Ignore(syscall.SIGHUP)
		logger := slog.New(pluginsdk.NewLogHandler(os.Stderr, slog.LevelInfo))
		serveRaw(wire.ProtocolMajor, wire.NewServer(name, native.New, logger))
	case "misnamed":
		pluginsdk.Serve(name, func(ns string, l *slog.Logger) (orchestra.Driver, error) {
			d, err := native.New(ns, l)
			return misnamed{d}, err
		})
	case "hang":
		pluginsdk.Serve(name, func(ns string, l *slog.Logger) (orchestra.Driver, error) {
			d, err := native.New(ns, l)
			return &hanging{d}, err
		})
	case "print":
		pluginsdk.Serve(name, func(ns string, l *slog.Logger) (orchestra.Driver, error) {
			fmt.Println("driver says hello on stdout")
			return native.New(ns, l)
		})
	case "oversize":
		serveRaw(wire.ProtocolMajor, &oversize{})
	case "protocol2":
		serveRaw(2, &oversize{})
	case "v1.0":
		logger := slog.New(pluginsdk.NewLogHandler(os.Stderr, slog.LevelInfo))
		serveRaw(wire.ProtocolMajor, v10{wire.NewServer(name, native.New, logger)})
	case "v1.2":
		logger := slog.New(pluginsdk.NewLogHandler(os.Stderr, slog.LevelInfo))
		serveRaw(wire.ProtocolMajor, v12{wire.NewServer(name, native.New, logger)})
	default:
		pluginsdk.Serve(name, native.New)
	}
}

type hanging struct{ orchestra.Driver }

func (h *hanging) RunContainer(ctx context.Context, task orchestra.Task) (orchestra.Container, error) {
	if task.ID == "hang" {
		select {}
	}
	return h.Driver.RunContainer(ctx, task)
}

func (h *hanging) Close() error { select {} }

// v10 is the service as a plugin built against protocol 1.0 serves it: no
// Detach or Attach, and no capability that names them.
type v10 struct{ driverv1.DriverServer }

func (s v10) Info(ctx context.Context, req *driverv1.InfoRequest) (*driverv1.InfoResponse, error) {
	info, err := s.DriverServer.Info(ctx, req)
	if err != nil {
		return nil, err
	}
	info.ProtocolVersion = "1.0"
	info.Capabilities = []string{"stdin_stream", "follow_logs", "get_container"}
	return info, nil
}

func (v10) Detach(context.Context, *driverv1.DetachRequest) (*driverv1.DetachResponse, error) {
	return nil, status.Error(codes.Unimplemented, "unknown method Detach")
}

func (v10) Attach(context.Context, *driverv1.AttachRequest) (*driverv1.AttachResponse, error) {
	return nil, status.Error(codes.Unimplemented, "unknown method Attach")
}

// v12 is the service as a plugin built against protocol 1.2 serves it: no
// Run, and no capability that names it.
type v12 struct{ driverv1.DriverServer }

func (s v12) Info(ctx context.Context, req *driverv1.InfoRequest) (*driverv1.InfoResponse, error) {
	info, err := s.DriverServer.Info(ctx, req)
	if err != nil {
		return nil, err
	}
	info.ProtocolVersion = "1.2"
	info.Capabilities = []string{"stdin_stream", "follow_logs", "get_container", "detach"}
	return info, nil
}

func (v12) Run(driverv1.Driver_RunServer) error {
	return status.Error(codes.Unimplemented, "unknown method Run")
}

// oversize answers Info with a name larger than gRPC's 4 MiB message limit.
type oversize struct {
	driverv1.UnimplementedDriverServer
}

func (oversize) Info(context.Context, *driverv1.InfoRequest) (*driverv1.InfoResponse, error) {
	return &driverv1.InfoResponse{Name: strings.Repeat("x", 5<<20)}, nil
}

// serveRaw serves srv with go-plugin directly, under protocol version.
func serveRaw(version int, srv driverv1.DriverServer) {
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig:  wire.HandshakeConfig(),
		VersionedPlugins: map[int]plugin.PluginSet{version: {wire.PluginKey: &raw{srv: srv}}},
		GRPCServer: func(opts []grpc.ServerOption) *grpc.Server {
			return grpc.NewServer(append(opts, grpc.MaxSendMsgSize(64<<20))...)
		},
	})
}

type raw struct {
	plugin.NetRPCUnsupportedPlugin
	srv driverv1.DriverServer
}

func (r *raw) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	driverv1.RegisterDriverServer(s, r.srv)
	return nil
}

func (r *raw) GRPCClient(context.Context, *plugin.GRPCBroker, *grpc.ClientConn) (interface{}, error) {
	return nil, fmt.Errorf("plugin side only")
}

// exiting exits the plugin when it is asked to run task "exit", leaving a
// child that holds the plugin's stdout and stderr.
type exiting struct{ orchestra.Driver }

func (e *exiting) RunContainer(ctx context.Context, task orchestra.Task) (orchestra.Container, error) {
	if task.ID == "exit" {
		holdPipes()
		os.Exit(3)
	}
	return e.Driver.RunContainer(ctx, task)
}

// holdPipes starts a child that holds the process's original stdout and
// stderr (fds 1 and 2, which go-plugin does not replace) and writes its PID
// to FAKEPLUGIN_PIDFILE.
func holdPipes() {
	cmd := exec.Command("sh", "-c", `echo $$ > "$1"; exec sleep 1000`, "child", os.Getenv("FAKEPLUGIN_PIDFILE"))
	cmd.Stdout = os.NewFile(1, "stdout")
	cmd.Stderr = os.NewFile(2, "stderr")
	if err := cmd.Start(); err != nil {
		panic(err)
	}
	for {
		if b, err := os.ReadFile(os.Getenv("FAKEPLUGIN_PIDFILE")); err == nil && strings.HasSuffix(string(b), "\n") {
			return
		}
		time.Sleep(time.Millisecond)
	}
}

// flood writes n bytes of 'x' to stderr without a newline.
func flood(n string) {
	size, err := strconv.Atoi(n)
	if err != nil {
		panic(err)
	}
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = 'x'
	}
	for size > 0 {
		k := min(size, len(buf))
		if _, err := os.Stderr.Write(buf[:k]); err != nil {
			panic(err)
		}
		size -= k
	}
}

// escapes answers Info with strings that would forge rows in a terminal,
// and one far longer than any version.
type escapes struct{ driverv1.DriverServer }

func (s escapes) Info(ctx context.Context, req *driverv1.InfoRequest) (*driverv1.InfoResponse, error) {
	info, err := s.DriverServer.Info(ctx, req)
	if err != nil {
		return nil, err
	}
	info.PluginVersion = "1.0\x1b[31m\nforged  9.9  1.2  ok"
	info.SdkVersion = strings.Repeat("s", 100<<10)
	return info, nil
}

// misnamed is a driver whose Name() disagrees with the name it is served as.
type misnamed struct{ orchestra.Driver }

func (misnamed) Name() string { return "somethingelse" }

// Command fakeplugin is a test fixture: the native driver served as a plugin
// whose misbehaviour is chosen by environment variables.
//
//	FAKEPLUGIN_NAME    the name it reports (default: from its file name)
//	FAKEPLUGIN_STDOUT  printed to stdout before Serve, as a careless init might
//	FAKEPLUGIN_MODE    hang:      RunContainer of task "hang" and Close never return
//	                   print:     the driver prints to stdout when opened
//	                   oversize:  Info answers with a 5 MiB name
//	                   protocol2: serves only protocol major version 2
//	                   v1.0:      reports protocol 1.0, which hosts no longer serve
//	                   v1.2:      reports protocol 1.2, which hosts no longer serve
//	                   badversion: reports protocol "abc"
//	                   badcaps:   lists a capability twice and one no protocol defines
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

	"github.com/jtarchie/pocketci/internal/pluginproc"
	"github.com/jtarchie/pocketci/internal/wire"
	"github.com/jtarchie/pocketci/orchestra"
	"github.com/jtarchie/pocketci/plugins/native"
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
	serve := func(wrap func(orchestra.Driver) orchestra.Driver, opts pluginproc.ServeOptions) {
		pluginproc.Serve(wrapped{native.Provider(), name, wrap}, opts)
	}
	info := func(version string, caps ...string) pluginproc.ServeOptions {
		return pluginproc.ServeOptions{Wrap: func(s driverv1.DriverServer) driverv1.DriverServer { return infoAs{s, version, caps} }}
	}
	switch os.Getenv("FAKEPLUGIN_MODE") {
	case "exit":
		serve(func(d orchestra.Driver) orchestra.Driver { return &exiting{d} }, pluginproc.ServeOptions{})
	case "nohandshake":
		holdPipes()
		select {}
	case "flood":
		flood(os.Getenv("FAKEPLUGIN_FLOOD"))
		serve(nil, pluginproc.ServeOptions{})
	case "escapes":
		serve(nil, pluginproc.ServeOptions{Wrap: func(s driverv1.DriverServer) driverv1.DriverServer { return escapes{s} }})
	case "deaf":
		signal.Ignore(syscall.SIGHUP)
		serve(nil, pluginproc.ServeOptions{Deaf: true})
	case "misnamed":
		serve(func(d orchestra.Driver) orchestra.Driver { return misnamed{d} }, pluginproc.ServeOptions{})
	case "hang":
		serve(func(d orchestra.Driver) orchestra.Driver { return &hanging{d} }, pluginproc.ServeOptions{})
	case "print":
		serve(func(d orchestra.Driver) orchestra.Driver {
			fmt.Println("driver says hello on stdout")
			return d
		}, pluginproc.ServeOptions{})
	case "oversize":
		serveRaw(wire.ProtocolMajor, &oversize{})
	case "protocol2":
		serveRaw(2, &oversize{})
	case "v1.0":
		serve(nil, info("1.0", "stdin_stream", "follow_logs", "get_container"))
	case "v1.2":
		serve(nil, info("1.2", "stdin_stream", "follow_logs", "get_container", "detach", "bulk"))
	case "badversion":
		serve(nil, info("abc", wire.CapabilityBulk, wire.CapabilityRun, wire.CapabilityConfig))
	case "badcaps":
		serve(nil, info(wire.ProtocolVersion, wire.CapabilityBulk, wire.CapabilityRun, wire.CapabilityConfig, wire.CapabilityRun, "teleport"))
	default:
		serve(nil, pluginproc.ServeOptions{})
	}
}

// wrapped is a provider whose drivers are wrapped, served under name.
type wrapped struct {
	orchestra.DriverProvider
	name string
	wrap func(orchestra.Driver) orchestra.Driver
}

func (w wrapped) Name() string { return w.name }

func (w wrapped) NewDriver(ctx context.Context, ns string, cfg orchestra.DriverConfig, l *slog.Logger) (orchestra.Driver, error) {
	d, err := w.DriverProvider.NewDriver(ctx, ns, cfg, l)
	if err != nil || w.wrap == nil {
		return d, err
	}
	return w.wrap(d), nil
}

type hanging struct{ orchestra.Driver }

func (h *hanging) RunContainer(ctx context.Context, task orchestra.Task) (orchestra.Container, error) {
	if task.ID == "hang" {
		select {}
	}
	return h.Driver.RunContainer(ctx, task)
}

func (h *hanging) Close() error { select {} }

// infoAs reports another protocol version and capabilities in Info.
type infoAs struct {
	driverv1.DriverServer
	version string
	caps    []string
}

func (s infoAs) Info(ctx context.Context, req *driverv1.InfoRequest) (*driverv1.InfoResponse, error) {
	info, err := s.DriverServer.Info(ctx, req)
	if err != nil {
		return nil, err
	}
	info.ProtocolVersion, info.Capabilities = s.version, s.caps
	return info, nil
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

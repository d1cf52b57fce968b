package wire

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/jtarchie/pocketci/orchestra"
	"github.com/jtarchie/pocketci/proto/driverv1"
)

// LogLevelEnv is the environment variable through which the host tells a
// plugin the lowest log level it wants ("debug", "info", "warn", "error").
const LogLevelEnv = "POCKETCI_PLUGIN_LOG_LEVEL"

// DebugEnv, set in a plugin's environment, makes Serve run the plugin by
// hand (for instance under a debugger): it serves until interrupted and
// prints the ORCHESTRA_REATTACH_PLUGINS value with which orchestra uses it
// instead of starting its own.
const DebugEnv = "POCKETCI_PLUGIN_DEBUG"

// parentPollInterval is how often a plugin checks that its host is alive.
const parentPollInterval = 500 * time.Millisecond

// ServeOptions change how Serve runs a plugin.
type ServeOptions struct {
	// KeepOnHostExit is pluginsdk.KeepOnHostExit: when the host dies, the
	// plugin exits without closing its drivers.
	KeepOnHostExit bool
	// Wrap, for test fixtures, wraps the service the plugin serves, so that
	// it can misbehave on purpose.
	Wrap func(driverv1.DriverServer) driverv1.DriverServer
	// Deaf, for test fixtures, never watches the host: the plugin a careless
	// author writes.
	Deaf bool
}

// NewServer is the service Serve serves for provider, for a program that
// runs its own gRPC server without a bulk socket (a benchmark of the
// plugin side's own cost).
func NewServer(provider orchestra.DriverProvider, logger *slog.Logger) driverv1.DriverServer {
	return newServer(provider, version(), logger)
}

// Serve runs provider's driver as a plugin and returns when the host stops
// it. The host opens a driver per namespace and config; their loggers reach
// the host's logger with level and attributes.
//
// Started from a shell rather than by a host, Serve prints what the binary
// is and how to install it, and exits with status 1. When the host dies
// without stopping the plugin, the plugin closes every driver it opened (so
// their containers, processes and VMs go with it) and exits.
func Serve(provider orchestra.DriverProvider, opts ServeOptions) {
	CloseInheritedOnExec()
	name, hs := provider.Name(), HandshakeConfig()
	debugging := os.Getenv(DebugEnv) != ""
	if !debugging && os.Getenv(hs.MagicCookieKey) != hs.MagicCookieValue {
		fmt.Fprintf(os.Stderr, "%s is the %q driver plugin for orchestra (pocketci); plugin version %s, SDK %s, protocol %s.\n"+
			"It is started by the orchestra host, not from a shell. To install it, copy it into a plugin directory\n"+
			"(--plugin-dir, ORCHESTRA_PLUGIN_PATH, the directory of the orchestra binary, or ~/.local/share/pocketci/plugins)\n"+
			"as pocketci-driver-%s, then run: orchestra plugins\n",
			os.Args[0], name, version(), SDKVersion, ProtocolVersion, name)
		os.Exit(1)
	}
	ignoreSIGPIPE()
	// go-plugin replaces os.Stderr after the handshake; logs go to the
	// original, which the host parses as hclog JSON.
	logs := &logOutput{w: os.Stderr}
	srv := newServer(provider, version(), slog.New(NewLogHandler(logs, levelFromEnv())))
	srv.logOut = logs
	dir := os.Getenv("PLUGIN_UNIX_SOCKET_DIR")
	if debugging {
		dir = ""
	}
	stopBulk, err := startBulk(srv, dir)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		os.Exit(1)
	}
	defer stopBulk()
	cfg := srv.serveConfig(hs, opts)
	if debugging {
		serveDebug(srv, cfg)
		return
	}
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	if !opts.Deaf {
		go watchHost(ctx, srv, srv.logger, opts.KeepOnHostExit)
	}
	plugin.Serve(cfg)
	// The host stopped the plugin. Drivers it left open stay as they are: a
	// host may release a namespace on purpose so its volumes outlive it.
}

// ignoreSIGPIPE: a dead host leaves the plugin's stdout and stderr as
// broken pipes, and a write there must fail, not kill the plugin with
// SIGPIPE before it has closed its drivers. Notify, not Ignore: an ignored
// signal stays ignored in every process the driver starts, and tasks rely on
// SIGPIPE.
func ignoreSIGPIPE() {
	sigpipe := make(chan os.Signal, 1)
	signal.Notify(sigpipe, syscall.SIGPIPE)
	go func() {
		for range sigpipe {
		}
	}()
}

// serveConfig is go-plugin's configuration for serving srv.
func (s *server) serveConfig(hs plugin.HandshakeConfig, opts ServeOptions) *plugin.ServeConfig {
	var service driverv1.DriverServer = s
	if opts.Wrap != nil {
		service = opts.Wrap(s)
	}
	return &plugin.ServeConfig{
		HandshakeConfig:  hs,
		VersionedPlugins: map[int]plugin.PluginSet{ProtocolMajor: {PluginKey: &grpcPlugin{server: service}}},
		GRPCServer: func(opts []grpc.ServerOption) *grpc.Server {
			return grpc.NewServer(append(opts, serverOptions(s.logger)...)...)
		},
		Logger: hclog.New(&hclog.LoggerOptions{Name: s.name(), Output: s.logOut.w, JSONFormat: true, Level: hclog.Warn}),
	}
}

// serveDebug serves the plugin for hosts that reattach to it by hand, until
// SIGINT or SIGTERM, then closes its drivers.
func serveDebug(srv *server, cfg *plugin.ServeConfig) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	reattach := make(chan *plugin.ReattachConfig, 1)
	closed := make(chan struct{})
	cfg.Test = &plugin.ServeTestConfig{Context: ctx, ReattachConfigCh: reattach, CloseCh: closed}
	go plugin.Serve(cfg)
	select {
	case rc := <-reattach:
		fmt.Printf("%s serves in debug mode (pid %d). Point orchestra at it, in another shell:\n\n"+
			"    export ORCHESTRA_REATTACH_PLUGINS='{\"%s\":{\"pid\":%d,\"addr\":\"%s\"}}'\n\n"+
			"Interrupt (Ctrl-C) to stop; its open drivers are closed.\n", srv.name(), rc.Pid, srv.name(), rc.Pid, rc.Addr.String())
	case <-closed:
		return
	}
	<-closed
	srv.closeAll()
}

func version() string {
	if info, ok := debug.ReadBuildInfo(); ok && info.Main.Version != "" {
		return info.Main.Version
	}
	return "(devel)"
}

func levelFromEnv() slog.Level {
	var level slog.Level
	if err := level.UnmarshalText([]byte(os.Getenv(LogLevelEnv))); err != nil {
		return slog.LevelInfo
	}
	return level
}

// serverOptions are the gRPC server options of every plugin: a panic in a
// driver method becomes an error for the host, and the plugin lives on.
func serverOptions(logger *slog.Logger) []grpc.ServerOption {
	recoverUnary := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
		defer func() {
			if r := recover(); r != nil {
				err = panicError(logger, info.FullMethod, r)
			}
		}()
		return handler(ctx, req)
	}
	return []grpc.ServerOption{grpc.ChainUnaryInterceptor(recoverUnary)}
}

func panicError(logger *slog.Logger, method string, r any) error {
	logger.Error("driver panicked", "method", method, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
	return status.Errorf(codes.Internal, "driver panicked in %s: %v", method, r)
}

// startBulk opens the bulk socket in dir, go-plugin's private socket
// directory, or in a new private directory when dir is empty. It returns
// what stops it.
func startBulk(srv *server, dir string) (stop func(), err error) {
	own := ""
	if dir == "" {
		if dir, err = os.MkdirTemp("", "pocketci-bulk-"); err != nil {
			return nil, fmt.Errorf("bulk socket: %w", err)
		}
		own = dir
	}
	l, err := srv.listenBulk(dir)
	if err != nil {
		if own != "" {
			os.RemoveAll(own)
		}
		return nil, err
	}
	return func() {
		l.Close()
		if own != "" {
			os.RemoveAll(own)
		}
	}, nil
}

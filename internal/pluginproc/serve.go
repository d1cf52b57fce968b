// Package pluginproc is the plumbing of a plugin process around the plugin
// half of the protocol (internal/wire): go-plugin's Serve, the bulk socket's
// directory, the plugin's logs, watching the host and exiting when it is
// gone, inherited fds, and Harness, which serves a plugin inside a test.
package pluginproc

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	"github.com/jtarchie/pocketci/internal/wire"
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

// Serve runs provider's driver as a plugin and returns when the host stops
// it (pluginsdk.Serve says what a plugin author sees).
func Serve(provider orchestra.DriverProvider, opts ServeOptions) {
	CloseInheritedOnExec()
	name, hs := provider.Name(), wire.HandshakeConfig()
	debugging := os.Getenv(DebugEnv) != ""
	if !debugging && os.Getenv(hs.MagicCookieKey) != hs.MagicCookieValue {
		fmt.Fprintf(os.Stderr, "%s is the %q driver plugin for orchestra (pocketci); plugin version %s, SDK %s, protocol %s.\n"+
			"It is started by the orchestra host, not from a shell. To install it, copy it into a plugin directory\n"+
			"(--plugin-dir, ORCHESTRA_PLUGIN_PATH, the directory of the orchestra binary, or ~/.local/share/pocketci/plugins)\n"+
			"as pocketci-driver-%s, then run: orchestra plugins\n",
			os.Args[0], name, wire.PluginVersion(), wire.SDKVersion, wire.ProtocolVersion, name)
		os.Exit(1)
	}
	ignoreSIGPIPE()
	// go-plugin replaces os.Stderr after the handshake; logs go to the
	// original, which the host parses as hclog JSON.
	logs := &logOutput{w: os.Stderr}
	logger := slog.New(NewLogHandler(logs, levelFromEnv()))
	srv := wire.NewServer(provider, logger)
	srv.OnAttach = logs.attach
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
	cfg := serveConfig(srv, name, logs.w, opts)
	if debugging {
		serveDebug(srv, name, cfg)
		return
	}
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	if !opts.Deaf {
		go watchHost(ctx, srv, logger, opts.KeepOnHostExit)
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
func serveConfig(srv *wire.Server, name string, logs *os.File, opts ServeOptions) *plugin.ServeConfig {
	var service driverv1.DriverServer = srv
	if opts.Wrap != nil {
		service = opts.Wrap(srv)
	}
	return &plugin.ServeConfig{
		HandshakeConfig:  wire.HandshakeConfig(),
		VersionedPlugins: wire.ServerPlugins(service),
		GRPCServer:       func(opts []grpc.ServerOption) *grpc.Server { return srv.NewGRPCServer(opts) },
		Logger:           hclog.New(&hclog.LoggerOptions{Name: name, Output: logs, JSONFormat: true, Level: hclog.Warn}),
	}
}

// serveDebug serves the plugin for hosts that reattach to it by hand, until
// SIGINT or SIGTERM, then closes its drivers.
func serveDebug(srv *wire.Server, name string, cfg *plugin.ServeConfig) {
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
			"Interrupt (Ctrl-C) to stop; its open drivers are closed.\n", name, rc.Pid, name, rc.Pid, rc.Addr.String())
	case <-closed:
		return
	}
	<-closed
	srv.CloseAll()
}

func levelFromEnv() slog.Level {
	var level slog.Level
	if err := level.UnmarshalText([]byte(os.Getenv(LogLevelEnv))); err != nil {
		return slog.LevelInfo
	}
	return level
}

// startBulk opens the bulk socket in dir, go-plugin's private socket
// directory, or in a new private directory when dir is empty. It returns
// what stops it.
func startBulk(srv *wire.Server, dir string) (stop func(), err error) {
	own := ""
	if dir == "" {
		if dir, err = os.MkdirTemp("", "pocketci-bulk-"); err != nil {
			return nil, fmt.Errorf("bulk socket: %w", err)
		}
		own = dir
	}
	l, err := srv.ListenBulk(dir)
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

// watchHost exits when the host is gone, closing every driver first, or
// with keep only the ephemeral ones. go-plugin does not tell a plugin that
// its host died.
func watchHost(ctx context.Context, srv *wire.Server, logger *slog.Logger, keep bool) {
	ticker := time.NewTicker(parentPollInterval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
		gone, why := srv.HostGone()
		if !gone {
			continue
		}
		if keep {
			logger.Warn(why + ": closing the ephemeral drivers, leaving the others' resources to the platform, and exiting")
			srv.CloseEphemeral()
		} else {
			logger.Warn(why + ": closing every driver and exiting")
			srv.CloseAll()
		}
		removeSocketDir()
		os.Exit(1)
	}
}

// removeSocketDir removes the private directory go-plugin gave the plugin
// for its sockets, and the host's directory around it when that is left
// empty: the host that would have removed them is gone.
func removeSocketDir() {
	dir := os.Getenv("PLUGIN_UNIX_SOCKET_DIR")
	if dir == "" {
		return
	}
	os.RemoveAll(dir)
	os.Remove(filepath.Dir(dir))
}

// logOutput is where the plugin's log records go: its original stderr,
// which the host that started it reads, until a host attaches; then
// os.Stderr as go-plugin set it after the handshake, which go-plugin streams
// to whichever host is connected.
type logOutput struct {
	mu sync.Mutex
	w  *os.File
}

func (o *logOutput) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.w.Write(p)
}

func (o *logOutput) attach() {
	o.mu.Lock()
	o.w = os.Stderr
	o.mu.Unlock()
}

package host

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jtarchie/pocketci/internal/pluginproc"
	"github.com/jtarchie/pocketci/internal/wire"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"github.com/hashicorp/go-plugin/runner"
	"google.golang.org/grpc"

	"github.com/jtarchie/pocketci/orchestra"
	"github.com/jtarchie/pocketci/pluginsdk"
	"github.com/jtarchie/pocketci/proto/driverv1"
)

// execFD is how the plugin process runs the open, checked file: its fd 3
// (cmd.ExtraFiles[0]) in the new process.
const execFD = "/proc/self/fd/3"

// ExeFDEnv tells a plugin that its fd (3) is the open file of its own
// binary, which the host ran: pluginsdk.Serve marks it close-on-exec, so
// that the processes it starts do not inherit it.
const ExeFDEnv = pluginproc.ExeFDEnv

// defaultStartTimeout bounds a plugin's start and handshake, unless
// Config.StartTimeout says otherwise.
const defaultStartTimeout = 30 * time.Second

// Restart policy: a plugin that dies within stableAfter of its start waits
// restartDelay, doubled for each further early death up to maxRestartDelay,
// before it is started again.
const (
	stableAfter     = 10 * time.Second
	restartDelay    = 100 * time.Millisecond
	maxRestartDelay = 5 * time.Second
)

// maxMessage is the largest message the host accepts from a plugin: a log
// chunk (pluginsdk sends at most 1 MiB) with room to spare.
const maxMessage = 4 << 20

// stderrLines is how many of a plugin's last stderr lines are kept to explain
// its death.
const stderrLines = 20

// State is where a plugin is in its life.
type State string

// The states of a plugin.
const (
	StateStopped State = "stopped" // not started yet, or stopped by the host
	StateRunning State = "running"
	StateExited  State = "exited"  // died on its own; restarted on next use
	StateRefused State = "refused" // may not run: see Plugin.Err
)

// Plugin is one plugin binary. It is started lazily, once, on first use; all
// driver instances opened through it share the one process.
type Plugin struct {
	// Name is the driver name, from the file name pocketci-driver-<name>.
	Name string
	// Path is the binary's absolute path.
	Path string

	host    *Host
	sum     string
	refused error
	logger  *slog.Logger
	stderr  *tail
	secrets *secretSet

	mu      sync.Mutex
	client  *plugin.Client
	proc    *pluginRunner              // the running process, when this host started it
	pid     int                        // the running process
	adopted map[string]wire.OpenDriver // kept open across a host restart, by namespace
	byHand  io.Closer                  // the connection to a plugin run by hand (DebugEnv)
	rpc     *wire.Client
	info    wire.Info
	drivers map[*hostDriver]struct{}
	gen     uint64    // generation of the running process, counted from 1
	started time.Time // when the running process started
	crashes int       // consecutive early deaths, for the restart delay
	// ephemeral counts the open drivers of each ephemeral namespace, which
	// the reaper cleans up if the host dies (see Config.OrphanCleanup).
	ephemeral map[string]int
	// final is set once the host stopped or killed the plugin for good: no
	// call, not even one Close itself makes, starts it again.
	final bool

	// stopping is set while the host itself stops the process, so its exit
	// is not reported as a crash. It is atomic: the exit callback runs while
	// start or stop may hold mu.
	stopping atomic.Bool
}

// Err says why the plugin may not run, or is nil.
func (p *Plugin) Err() error { return p.refused }

// State reports whether the plugin process is running.
func (p *Plugin) State() State {
	if p.refused != nil {
		return StateRefused
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.client == nil:
		return StateStopped
	case !p.running():
		if p.stopping.Load() {
			return StateStopped
		}
		return StateExited
	default:
		return StateRunning
	}
}

// PID is the plugin process's ID, or 0 when it is not running.
func (p *Plugin) PID() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.running() {
		return 0
	}
	return p.pid
}

// SHA256 is the hex SHA-256 of the plugin binary.
func (p *Plugin) SHA256() (string, error) {
	return fileSHA256(p.Path)
}

// Info starts the plugin if needed and returns what it reports about itself.
func (p *Plugin) Info(ctx context.Context) (wire.Info, error) {
	if _, _, err := p.start(ctx); err != nil {
		return wire.Info{}, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.info, nil
}

// OpenOptions say how a namespace is opened.
type OpenOptions struct {
	// Config is the driver's config as JSON, empty for its defaults. The
	// plugin decodes and checks it before any task runs; the host keeps its
	// strings out of logs and errors.
	Config json.RawMessage
	// Ephemeral declares that nothing in the namespace may outlive this
	// host: when the host dies without closing the driver, the plugin closes
	// it, even a plugin that leaves its resources to the platform on host
	// exit (pluginsdk.KeepOnHostExit, as docker does so that a new host can
	// reattach). The CLI's throwaway namespaces are ephemeral.
	Ephemeral bool
}

// Open opens a driver instance for namespace in the plugin, starting the
// plugin under ctx if it is not running.
func (p *Plugin) Open(ctx context.Context, namespace string, opts OpenOptions) (orchestra.Driver, error) {
	rpc, _, err := p.start(ctx)
	if err != nil {
		return nil, err
	}
	if od, ok := p.adopt(namespace); ok && len(opts.Config) == 0 {
		return p.newDriver(namespace, rpc.Adopt(od), opts), nil
	}
	inner, err := p.openNamespace(ctx, rpc, namespace, opts)
	if err != nil {
		return nil, err
	}
	return p.newDriver(namespace, inner, opts), nil
}

// openNamespace opens namespace in the running plugin, as opts say.
func (p *Plugin) openNamespace(ctx context.Context, rpc *wire.Client, namespace string, opts OpenOptions) (orchestra.Driver, error) {
	p.keepSecret(opts.Config)
	return rpc.Open(ctx, namespace, wire.OpenOptions{Config: opts.Config, Ephemeral: opts.Ephemeral})
}

// CheckConfig starts the plugin if needed and asks it to decode and check a
// driver config, as Open would, without opening a driver.
func (p *Plugin) CheckConfig(ctx context.Context, config json.RawMessage) error {
	rpc, _, err := p.start(ctx)
	if err != nil {
		return err
	}
	return rpc.CheckConfig(ctx, config)
}

// start returns a client for the running plugin and the generation of its
// process, starting (or, after it died, restarting) the process. A plugin
// that keeps dying soon after its start is restarted with a growing delay.
func (p *Plugin) start(ctx context.Context) (*wire.Client, uint64, error) {
	if p.refused != nil {
		return nil, 0, fmt.Errorf("plugin %s: %w", p.Name, p.refused)
	}
	if err := p.host.checkOpen(ctx, p.Name); err != nil {
		return nil, 0, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.host.checkOpen(ctx, p.Name); err != nil {
		return nil, 0, err
	}
	if p.final {
		return nil, 0, fmt.Errorf("plugin %s: stopped by the host: %w", p.Name, orchestra.ErrClosed)
	}
	if p.running() {
		return p.rpc, p.gen, nil
	}
	if err := p.waitToRestart(ctx); err != nil {
		return nil, 0, err
	}
	return p.launch(ctx)
}

// waitToRestart forgets a dead process and waits the restart delay its
// early deaths earned. p.mu is held.
func (p *Plugin) waitToRestart(ctx context.Context) error {
	if p.client == nil {
		return nil
	}
	_ = killClient(p.client, p.proc, p.host.shutdownTimeout)
	p.client, p.proc = nil, nil
	// The driver instances in the dead process reopen on their next call.
	if time.Since(p.started) < stableAfter {
		p.crashes++
	} else {
		p.crashes = 1
	}
	delay := min(restartDelay<<(p.crashes-1), maxRestartDelay)
	p.logger.Info("restarting plugin", "plugin", p.Name, "after", delay, "crashes", p.crashes)
	select {
	case <-time.After(delay):
		return nil
	case <-ctx.Done():
		return fmt.Errorf("plugin %s: waiting %s to restart after %d crashes: %w", p.Name, delay, p.crashes, ctx.Err())
	}
}

// clientConfig is what go-plugin needs to talk to this plugin, whether the
// host starts it or reattaches to it; logs go to logger.
func (p *Plugin) clientConfig(logger *slog.Logger) *plugin.ClientConfig {
	return &plugin.ClientConfig{
		HandshakeConfig:  wire.HandshakeConfig(),
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		Logger:           hclogger(logger),
		SyncStdout:       lineLogger{logger, "plugin stdout"},
		SyncStderr:       lineLogger{logger, "plugin stderr"},
		// go-plugin lets a plugin send the host messages of up to 2 GiB;
		// the protocol never needs more than a few KiB in one, so a hostile
		// plugin cannot make the host buffer more than maxMessage.
		GRPCDialOptions: []grpc.DialOption{grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxMessage))},
	}
}

// launch starts the plugin process from its checked file and connects to
// it. p.mu is held.
func (p *Plugin) launch(ctx context.Context) (*wire.Client, uint64, error) {
	// The file is opened once and checked (trust, and the SHA256SUMS pin)
	// as it is open. A pinned plugin runs that open file, so nothing can be
	// swapped in between; an unpinned one runs the checked, resolved path
	// (its directories admit no one else's writes), so that its processes
	// do not inherit an fd of its binary.
	exe, err := openTrusted(p.Path, p.sum)
	if err != nil {
		return nil, 0, fmt.Errorf("plugin %s: %w", p.Name, err)
	}
	defer exe.Close()
	p.stopping.Store(false)
	logger := p.logger.With("plugin", p.Name)
	var (
		proc   *pluginRunner
		procMu sync.Mutex // proc is set in go-plugin's goroutine
	)
	cfg := p.clientConfig(logger)
	cfg.VersionedPlugins = wire.ClientPlugins()
	cfg.Stderr = p.stderr
	cfg.StartTimeout = p.host.startTimeout
	cfg.AutoMTLS = p.host.autoMTLS
	cfg.UnixSocketConfig = &plugin.UnixSocketConfig{TempDir: p.host.socketDir}
	// go-plugin hands over a template command carrying its environment.
	cfg.RunnerFunc = func(_ hclog.Logger, spec *exec.Cmd, _ string) (runner.Runner, error) {
		r, err := newRunner(p.command(exe, spec), logger, p.exited)
		if r != nil {
			r.noReaper = p.host.noReaper
			r.ephemeralList, r.plugin, r.cleanup = p.ephemeralList(), p.Name, p.host.orphanCleanup
		}
		procMu.Lock()
		proc = r
		procMu.Unlock()
		return r, err
	}
	client := plugin.NewClient(cfg)
	rpc, info, err := p.connectStarted(ctx, client, func() *pluginRunner {
		procMu.Lock()
		defer procMu.Unlock()
		return proc
	})
	if err != nil {
		p.stopping.Store(true)
		if proc != nil {
			// Killed with its group before go-plugin's Kill, which would
			// first ask a plugin that failed to start to shut down.
			_ = proc.Kill(context.Background())
		}
		killClient(client, proc, p.host.shutdownTimeout)
		return nil, 0, p.explainStart(err)
	}
	p.commit(client, proc, proc.pid, rpc, info)
	logger.Debug("plugin started", "path", p.Path, "version", info.PluginVersion, "protocol", info.ProtocolVersion, "pid", proc.pid, "generation", p.gen)
	return rpc, p.gen, nil
}

// command is the plugin's command: the checked file, run from its open fd
// when it is pinned; no stdin (only the task it runs may read the host's,
// through the protocol).
func (p *Plugin) command(exe *os.File, spec *exec.Cmd) *exec.Cmd {
	cmd := exec.Command(exe.Name())
	cmd.Env = append(spec.Env, pluginsdk.LogLevelEnv+"="+p.host.level.String())
	if p.sum != "" {
		cmd = exec.Command(execFD)
		cmd.ExtraFiles = []*os.File{exe}
		cmd.Env = append(spec.Env, pluginsdk.LogLevelEnv+"="+p.host.level.String(), ExeFDEnv+"=3")
	}
	cmd.Args[0] = p.Path
	cmd.Stdin = nil
	return cmd
}

// connectStarted waits for the started plugin's handshake, checks its Info
// and returns its client; the error says why it could not be used. A
// failure its stderr may explain is a startFailure.
func (p *Plugin) connectStarted(ctx context.Context, client *plugin.Client, proc func() *pluginRunner) (*wire.Client, wire.Info, error) {
	start := time.Now()
	proto, err := connect(ctx, client, proc)
	switch {
	case err != nil && ctx.Err() != nil:
		return nil, wire.Info{}, startFailure{fmt.Errorf("plugin %s (%s): start: gave up waiting for its handshake after %s: %w", p.Name, p.Path,
			time.Since(start).Round(time.Millisecond), ctx.Err())}
	case err != nil && strings.Contains(strings.ToLower(err.Error()), "incompatible api version"):
		return nil, wire.Info{}, fmt.Errorf("plugin %s (%s) speaks another protocol: %w (this host speaks protocol %s, SDK %s); rebuild the plugin against a compatible pluginsdk",
			p.Name, p.Path, err, wire.ProtocolVersion, pluginsdk.SDKVersion)
	case err != nil:
		return nil, wire.Info{}, startFailure{fmt.Errorf("plugin %s (%s): start: %w", p.Name, p.Path, err)}
	}
	rpc, info, err := p.handshake(ctx, proto)
	if err == nil {
		err = rpc.Accept(info, p.host.socketDir)
	}
	return rpc, info, err
}

// commit makes a connected process the plugin's running one, a new
// generation. p.mu is held.
func (p *Plugin) commit(client *plugin.Client, proc *pluginRunner, pid int, rpc *wire.Client, info wire.Info) {
	p.gen++
	p.started = time.Now()
	p.stopping.Store(false)
	p.client, p.proc, p.pid, p.rpc, p.info = client, proc, pid, rpc, info
}

// handshake gets the driver client from a connected plugin and checks, with
// Info, that the plugin is the one its file name says.
func (p *Plugin) handshake(ctx context.Context, proto plugin.ClientProtocol) (*wire.Client, wire.Info, error) {
	raw, err := proto.Dispense(wire.PluginKey)
	if err != nil {
		return nil, wire.Info{}, fmt.Errorf("plugin %s (%s): dispense driver: %w", p.Name, p.Path, err)
	}
	rpcClient, ok := raw.(driverv1.DriverClient)
	if !ok {
		return nil, wire.Info{}, fmt.Errorf("plugin %s (%s): dispensed %T, not a driver client", p.Name, p.Path, raw)
	}
	rpc := wire.NewClient(p.Name, rpcClient)
	info, err := rpc.Info(ctx)
	if err != nil {
		return nil, wire.Info{}, err
	}
	info = p.boundInfo(info)
	if info.Name != p.Name {
		return nil, wire.Info{}, fmt.Errorf("plugin %s: %s reports the name %q: a plugin's name must match its file name %s%s, refusing it",
			p.Name, p.Path, info.Name, Prefix, p.Name)
	}
	return rpc, info, nil
}

// alive reports whether the process of generation gen is still the running one.
func (p *Plugin) alive(gen uint64) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.running() && p.gen == gen
}

// running reports whether the plugin process is running. For a process
// this host started, that is known the moment it exits, before go-plugin
// has noticed. p.mu must be held.
func (p *Plugin) running() bool {
	if p.client == nil || p.client.Exited() {
		return false
	}
	if p.proc != nil {
		select {
		case <-p.proc.exitedCh():
			return false
		default:
		}
	}
	return true
}

// exited is called the moment the plugin process ends.
func (p *Plugin) exited(err error) {
	if p.stopping.Load() {
		return
	}
	p.logger.Error("plugin exited unexpectedly; it restarts on next use", "plugin", p.Name, "path", p.Path,
		"err", err, "stderr", strings.Join(p.secrets.redactAll(p.stderr.Lines()), "\n"))
}

// startFailure is a failed start that the plugin's last stderr lines may
// explain. They are added by explainStart once the process is gone and
// go-plugin has read all of its stderr: quoted at once, the lines written
// just before it died could still be in the pipe.
type startFailure struct{ error }

func (e startFailure) Unwrap() error { return e.error }

// explainStart adds the plugin's last stderr lines to a startFailure.
func (p *Plugin) explainStart(err error) error {
	var sf startFailure
	if !errors.As(err, &sf) {
		return err
	}
	return fmt.Errorf("%w%s", sf.error, p.lastStderr())
}

func (p *Plugin) lastStderr() string {
	lines := p.secrets.redactAll(p.stderr.Lines())
	if len(lines) == 0 {
		return ""
	}
	return "; last stderr:\n" + strings.Join(lines, "\n")
}

package host

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"github.com/hashicorp/go-plugin/runner"
	"google.golang.org/grpc"

	"github.com/jtarchie/pocketci/internal/wire"
	"github.com/jtarchie/pocketci/orchestra"
	"github.com/jtarchie/pocketci/pluginsdk"
	"github.com/jtarchie/pocketci/pluginsdk/proto/driverv1"
)

// startTimeout bounds a plugin's start and handshake.
const startTimeout = 30 * time.Second

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

	mu      sync.Mutex
	client  *plugin.Client
	pid     int                        // the running process
	adopted map[string]wire.OpenDriver // kept open across a host restart, by namespace
	byHand  io.Closer                  // the connection to a plugin run by hand (DebugEnv)
	rpc     *wire.Client
	info    wire.Info
	drivers map[*driver]struct{}
	gen     uint64    // generation of the running process, counted from 1
	started time.Time // when the running process started
	crashes int       // consecutive early deaths, for the restart delay

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
	case p.client.Exited():
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
	if p.client == nil || p.client.Exited() {
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

// NewDriver opens a driver instance for namespace in the plugin, starting the
// plugin if it is not running. It has the signature of orchestra.InitFunc,
// so a plugin registers like an in-process driver. The plugin's own logs
// reach the host's logger; logger is not used.
func (p *Plugin) NewDriver(namespace string, _ *slog.Logger) (orchestra.Driver, error) {
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	rpc, _, err := p.start(ctx)
	if err != nil {
		return nil, err
	}
	if od, ok := p.adopt(namespace); ok {
		return p.newDriver(namespace, rpc.Adopt(od)), nil
	}
	inner, err := rpc.Open(ctx, namespace)
	if err != nil {
		return nil, err
	}
	return p.newDriver(namespace, inner), nil
}

// start returns a client for the running plugin and the generation of its
// process, starting (or, after it died, restarting) the process. A plugin
// that keeps dying soon after its start is restarted with a growing delay.
func (p *Plugin) start(ctx context.Context) (*wire.Client, uint64, error) {
	if p.refused != nil {
		return nil, 0, fmt.Errorf("plugin %s: %w", p.Name, p.refused)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.client != nil && !p.client.Exited() {
		return p.rpc, p.gen, nil
	}
	if p.client != nil {
		p.client.Kill()
		p.client = nil
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
		case <-ctx.Done():
			return nil, 0, fmt.Errorf("plugin %s: waiting %s to restart after %d crashes: %w", p.Name, delay, p.crashes, ctx.Err())
		}
	}
	if err := p.checkSum(); err != nil {
		return nil, 0, err
	}
	p.stopping.Store(false)

	logger := p.logger.With("plugin", p.Name)
	var proc *pluginRunner
	client := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  wire.HandshakeConfig(),
		VersionedPlugins: wire.ClientPlugins(),
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		Logger:           hclogger(logger),
		Stderr:           p.stderr,
		SyncStdout:       lineLogger{logger, "plugin stdout"},
		SyncStderr:       lineLogger{logger, "plugin stderr"},
		StartTimeout:     startTimeout,
		AutoMTLS:         p.host.autoMTLS,
		UnixSocketConfig: &plugin.UnixSocketConfig{TempDir: p.host.socketDir},
		// go-plugin lets a plugin send the host messages of up to 2 GiB;
		// the protocol never needs more than one chunk, so a hostile
		// plugin cannot make the host buffer more than maxMessage.
		GRPCDialOptions: p.dialOptions(),
		// go-plugin hands over a template command carrying its environment.
		RunnerFunc: func(_ hclog.Logger, spec *exec.Cmd, _ string) (runner.Runner, error) {
			cmd := exec.Command(p.Path)
			cmd.Env = append(spec.Env, pluginsdk.LogLevelEnv+"="+p.host.level.String())
			// The plugin gets no stdin: only the task it runs may read the
			// host's, through the protocol.
			cmd.Stdin = nil
			r, err := newRunner(cmd, logger, p.exited)
			proc = r
			return r, err
		},
	})
	fail := func(format string, args ...any) (*wire.Client, uint64, error) {
		p.stopping.Store(true)
		client.Kill()
		return nil, 0, fmt.Errorf(format, args...)
	}
	proto, err := client.Client()
	if err != nil {
		if strings.Contains(strings.ToLower(err.Error()), "incompatible api version") {
			return fail("plugin %s (%s) speaks another protocol: %w (this host speaks protocol %d.%d, SDK %s); rebuild the plugin against a compatible pluginsdk",
				p.Name, p.Path, err, wire.ProtocolMajor, wire.ProtocolMinor, pluginsdk.SDKVersion)
		}
		return fail("plugin %s (%s): start: %w%s", p.Name, p.Path, err, p.lastStderr())
	}
	rpc, info, err := p.handshake(ctx, proto)
	if err != nil {
		return fail("%w", err)
	}
	p.useBulk(rpc, info, true)
	p.gen++
	p.started = time.Now()
	p.client, p.pid, p.rpc, p.info = client, proc.pid, rpc, info
	logger.Debug("plugin started", "path", p.Path, "version", info.PluginVersion, "protocol", info.ProtocolVersion, "pid", proc.pid, "generation", p.gen)
	return rpc, p.gen, nil
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
	if info.Name != p.Name {
		return nil, wire.Info{}, fmt.Errorf("plugin %s: %s reports the name %q: a plugin's name must match its file name %s%s, refusing it",
			p.Name, p.Path, info.Name, Prefix, p.Name)
	}
	return rpc, info, nil
}

// useBulk sends stdin and logs over the plugin's bulk socket when it has
// one (protocol 1.2) and the channel is not meant to be encrypted. A plugin
// this host started must put the socket in the private directory the host
// gave it.
func (p *Plugin) useBulk(rpc *wire.Client, info wire.Info, started bool) {
	if p.host.autoMTLS || info.BulkAddr == "" || !hasCapability(info, wire.CapabilityBulk) {
		return
	}
	if !started {
		rpc.UseBulk(info.BulkAddr)
		return
	}
	if err := rpc.UseBulkIn(info.BulkAddr, p.host.socketDir); err != nil {
		p.logger.Warn("plugin's bulk socket is not in its private directory: not using it", "plugin", p.Name, "err", err)
	}
}

// dialOptions are the gRPC options for the connection to the plugin.
func (p *Plugin) dialOptions() []grpc.DialOption {
	return []grpc.DialOption{grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxMessage))}
}

// alive reports whether the process of generation gen is still the running one.
func (p *Plugin) alive(gen uint64) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.client != nil && !p.client.Exited() && p.gen == gen
}

// checkSum verifies the binary against its directory's SHA256SUMS, right
// before it runs.
func (p *Plugin) checkSum() error {
	if p.sum == "" {
		return nil
	}
	got, err := fileSHA256(p.Path)
	if err != nil {
		return fmt.Errorf("plugin %s: %w", p.Name, err)
	}
	if got != p.sum {
		return fmt.Errorf("plugin %s: %s has SHA-256 %s but %s pins %s: refusing to run it", p.Name, p.Path, got, SumsFile, p.sum)
	}
	return nil
}

// exited is called the moment the plugin process ends.
func (p *Plugin) exited(err error) {
	if p.stopping.Load() {
		return
	}
	p.logger.Error("plugin exited unexpectedly; it restarts on next use", "plugin", p.Name, "path", p.Path,
		"err", err, "stderr", strings.Join(p.stderr.Lines(), "\n"))
}

func (p *Plugin) lastStderr() string {
	lines := p.stderr.Lines()
	if len(lines) == 0 {
		return ""
	}
	return "; last stderr:\n" + strings.Join(lines, "\n")
}

// stop closes every driver opened through the plugin, then stops the
// process. A plugin whose Close calls have not all returned within the
// host's close timeout is killed all the same.
func (p *Plugin) stop() error {
	// Drivers kept open across a host restart that nobody claimed are
	// closed like the others.
	p.mu.Lock()
	var unclaimed []string
	for ns := range p.adopted {
		unclaimed = append(unclaimed, ns)
	}
	p.mu.Unlock()
	for _, ns := range unclaimed {
		if od, ok := p.adopt(ns); ok && p.rpc != nil {
			p.newDriver(ns, p.rpc.Adopt(od))
		}
	}
	p.mu.Lock()
	drivers := make([]*driver, 0, len(p.drivers))
	if p.client != nil && !p.client.Exited() {
		for d := range p.drivers {
			drivers = append(drivers, d)
		}
	}
	p.mu.Unlock()

	errc := make(chan error, len(drivers))
	for _, d := range drivers {
		go func() { errc <- d.Close() }()
	}
	var errs []error
	timeout := time.After(p.host.closeTimeout)
	for range drivers {
		select {
		case err := <-errc:
			if err != nil {
				errs = append(errs, err)
			}
		case <-timeout:
			errs = append(errs, fmt.Errorf("plugin %s: closing its drivers took longer than %s: killing it", p.Name, p.host.closeTimeout))
			goto kill
		}
	}
kill:
	p.mu.Lock()
	clear(p.drivers)
	client, byHand := p.client, p.byHand
	p.stopping.Store(true)
	p.client, p.byHand = nil, nil
	p.mu.Unlock()
	if byHand != nil {
		// A plugin run by hand is not the host's to stop: only disconnect.
		byHand.Close()
	} else if client != nil {
		client.Kill()
	}
	return errors.Join(errs...)
}

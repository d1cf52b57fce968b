package host

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"github.com/hashicorp/go-plugin/runner"

	"github.com/jtarchie/pocketci/orchestra"
	"github.com/jtarchie/pocketci/pluginsdk"
	"github.com/jtarchie/pocketci/pluginsdk/proto/driverv1"
)

// startTimeout bounds a plugin's start and handshake.
const startTimeout = 30 * time.Second

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
	proc    *pluginRunner
	rpc     *pluginsdk.Client
	info    pluginsdk.Info
	drivers map[orchestra.Driver]struct{}

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
	if p.client == nil || p.client.Exited() || p.proc == nil {
		return 0
	}
	return p.proc.pid
}

// SHA256 is the hex SHA-256 of the plugin binary.
func (p *Plugin) SHA256() (string, error) {
	return fileSHA256(p.Path)
}

// Info starts the plugin if needed and returns what it reports about itself.
func (p *Plugin) Info(ctx context.Context) (pluginsdk.Info, error) {
	if _, err := p.start(ctx); err != nil {
		return pluginsdk.Info{}, err
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
	rpc, err := p.start(ctx)
	if err != nil {
		return nil, err
	}
	d, err := rpc.Open(ctx, namespace)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	p.drivers[d] = struct{}{}
	p.mu.Unlock()
	return p.track(d), nil
}

// start returns a client for the running plugin, starting (or, after it
// died, restarting) the process.
func (p *Plugin) start(ctx context.Context) (*pluginsdk.Client, error) {
	if p.refused != nil {
		return nil, fmt.Errorf("plugin %s: %w", p.Name, p.refused)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.client != nil && !p.client.Exited() {
		return p.rpc, nil
	}
	if p.client != nil {
		p.client.Kill()
		p.client = nil
		// The driver instances lived in the dead process.
		clear(p.drivers)
		p.logger.Info("restarting plugin", "plugin", p.Name)
	}
	if err := p.checkSum(); err != nil {
		return nil, err
	}
	p.stopping.Store(false)

	logger := p.logger.With("plugin", p.Name)
	var proc *pluginRunner
	client := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  pluginsdk.HandshakeConfig(),
		VersionedPlugins: pluginsdk.ClientPlugins(),
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		Logger:           hclogger(logger),
		Stderr:           p.stderr,
		SyncStdout:       lineLogger{logger, "plugin stdout"},
		SyncStderr:       lineLogger{logger, "plugin stderr"},
		StartTimeout:     startTimeout,
		AutoMTLS:         p.host.autoMTLS,
		UnixSocketConfig: &plugin.UnixSocketConfig{TempDir: p.host.socketDir},
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
	kill := func() {
		p.stopping.Store(true)
		client.Kill()
	}
	proto, err := client.Client()
	if err != nil {
		kill()
		return nil, fmt.Errorf("plugin %s (%s): start: %w%s", p.Name, p.Path, err, p.lastStderr())
	}
	raw, err := proto.Dispense(pluginsdk.PluginKey)
	if err != nil {
		kill()
		return nil, fmt.Errorf("plugin %s (%s): dispense driver: %w", p.Name, p.Path, err)
	}
	rpcClient, ok := raw.(driverv1.DriverClient)
	if !ok {
		kill()
		return nil, fmt.Errorf("plugin %s (%s): dispensed %T, not a driver client", p.Name, p.Path, raw)
	}
	rpc := pluginsdk.NewClient(p.Name, rpcClient)
	info, err := rpc.Info(ctx)
	if err != nil {
		kill()
		return nil, err
	}
	if info.Name != p.Name {
		kill()
		return nil, fmt.Errorf("plugin %s: %s reports the name %q: a plugin's name must match its file name %s%s, refusing it",
			p.Name, p.Path, info.Name, Prefix, p.Name)
	}
	p.client, p.proc, p.rpc, p.info = client, proc, rpc, info
	logger.Debug("plugin started", "path", p.Path, "version", info.PluginVersion, "protocol", info.ProtocolVersion, "pid", proc.pid)
	return rpc, nil
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

// stop closes every driver opened through the plugin, then stops the process.
func (p *Plugin) stop() error {
	p.mu.Lock()
	drivers := make([]orchestra.Driver, 0, len(p.drivers))
	if p.client != nil && !p.client.Exited() {
		for d := range p.drivers {
			drivers = append(drivers, d)
		}
	}
	p.mu.Unlock()
	var errs []error
	for _, d := range drivers {
		if err := d.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	p.mu.Lock()
	clear(p.drivers)
	client := p.client
	p.stopping.Store(true)
	p.client = nil
	p.mu.Unlock()
	if client != nil {
		client.Kill()
	}
	return errors.Join(errs...)
}

// track forgets d once it is closed, so stop only closes what is open.
func (p *Plugin) track(d orchestra.Driver) orchestra.Driver {
	forget := func() {
		p.mu.Lock()
		delete(p.drivers, d)
		p.mu.Unlock()
	}
	if f, ok := d.(orchestra.ContainerFinder); ok {
		return &trackedFinder{trackedDriver{d, forget}, f}
	}
	return &trackedDriver{d, forget}
}

type trackedDriver struct {
	orchestra.Driver
	forget func()
}

func (t *trackedDriver) release() { t.forget() }

// Release tells the host not to close d when the host closes. The resources
// of d's namespace then outlive the host, until a driver opened later in the
// same namespace is closed (`orchestra clean`). d must come from a Plugin;
// for any other driver Release does nothing.
func Release(d orchestra.Driver) {
	if r, ok := d.(interface{ release() }); ok {
		r.release()
	}
}

// Close closes the driver and forgets it.
func (t *trackedDriver) Close() error {
	err := t.Driver.Close()
	t.forget()
	return err
}

type trackedFinder struct {
	trackedDriver
	orchestra.ContainerFinder
}

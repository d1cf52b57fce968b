// Package host finds orchestra driver plugins, starts them, and adapts each
// to orchestra.Driver, so callers cannot tell a plugin from a driver compiled
// into the program.
//
// A plugin is an executable named pocketci-driver-<name> in a plugin
// directory (see Dirs). The host starts it on first use, once, and opens a
// driver instance per namespace inside it.
package host

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jtarchie/pocketci/internal/pluginproc"
	"github.com/jtarchie/pocketci/orchestra"
)

// Config configures a Host.
type Config struct {
	// Dirs are the plugin directories in precedence order; see Dirs.
	Dirs []string
	// Logger receives the host's logs and, with their level and attributes,
	// the plugins' logs. Defaults to slog.Default().
	Logger *slog.Logger
	// StateFile, when set, is where Detach leaves the plugins it keeps
	// running, and where New finds them to reattach.
	StateFile string
	// CloseTimeout bounds how long Close waits for a plugin to close its
	// drivers before it kills the plugin. Defaults to 2 minutes.
	CloseTimeout time.Duration
	// StartTimeout bounds a plugin's start, from its exec to the end of its
	// handshake. Defaults to 30 seconds.
	StartTimeout time.Duration
	// ShutdownTimeout bounds how long a plugin has to exit once asked to,
	// after its drivers are closed (or CloseTimeout passed): then its whole
	// process group is killed. Defaults to 5 seconds.
	ShutdownTimeout time.Duration
	// OrphanCleanup is a command that removes one namespace, such as
	// {"/usr/local/bin/orchestra", "clean", "--plugin-dir", dir}. When the
	// host dies without closing an ephemeral namespace (OpenOptions), the
	// plugin's reaper runs it with "--driver", the plugin's name and the
	// namespace appended, after the plugin is gone: so a plugin that leaves
	// its resources to the platform on host exit (KeepOnHostExit) does not
	// keep a namespace that was to die with its host. A plugin with the
	// "ephemeral" capability (1.3) closes such namespaces itself when its
	// host dies, with or without OrphanCleanup; the command is the fallback
	// for older plugins, and for a plugin too frozen to do it (the reaper
	// kills it first).
	OrphanCleanup []string
	// AutoMTLS turns on go-plugin's automatic mutual TLS. It is off by
	// default: the host and plugin already talk over a unix socket in a
	// private 0700 directory, and AutoMTLS costs a key pair on both sides at
	// every plugin start.
	AutoMTLS bool
}

// Host owns the plugins found in its directories.
type Host struct {
	logger       *slog.Logger
	level        slog.Level
	autoMTLS     bool
	closeTimeout time.Duration
	startTimeout time.Duration
	// shutdownTimeout: see Config.ShutdownTimeout.
	shutdownTimeout time.Duration
	socketDir       string
	// closed is set once Close, Kill or Detach began: every later call
	// returns orchestra.ErrClosed.
	closed        atomic.Bool
	orphanCleanup []string
	// noReaper starts plugins without a reaper (for the benchmark that
	// measures its cost).
	noReaper bool
	// closeRan is set once Close ran.
	closeRan  atomic.Bool
	stateFile string
	// oldSocketDirs belong to plugins reattached from a detached host.
	oldSocketDirs []string
	plugins       []*Plugin
	byName        map[string]*Plugin
	// replaced are plugins that Load put another in the place of: they
	// are no longer listed, but one already started is stopped by Close.
	replaced []*Plugin
}

// New discovers the plugins in cfg.Dirs. It starts none of them. It marks
// every fd the process inherited above stderr close-on-exec, so that plugins
// (and through them, tasks) start with fds 0-2 only: Go would pass an
// inherited fd that is not close-on-exec to every process it starts.
func New(cfg Config) (*Host, error) {
	pluginproc.CloseInheritedOnExec()
	logger := cfg.Logger
	if logger == nil {
		logger = slog.Default()
	}
	socketDir, err := os.MkdirTemp(socketBase(), "pocketci-plugins-")
	if err != nil {
		return nil, fmt.Errorf("create plugin socket directory: %w", err)
	}
	h := &Host{
		logger:        logger,
		level:         lowestLevel(logger),
		autoMTLS:      cfg.AutoMTLS,
		closeTimeout:  cfg.CloseTimeout,
		stateFile:     cfg.StateFile,
		orphanCleanup: cfg.OrphanCleanup,
		socketDir:     socketDir,
		byName:        map[string]*Plugin{},
	}
	if h.closeTimeout <= 0 {
		h.closeTimeout = 2 * time.Minute
	}
	h.startTimeout = cfg.StartTimeout
	if h.startTimeout <= 0 {
		h.startTimeout = defaultStartTimeout
	}
	h.shutdownTimeout = cfg.ShutdownTimeout
	if h.shutdownTimeout <= 0 {
		h.shutdownTimeout = 5 * time.Second
	}
	for _, c := range discover(cfg.Dirs, logger) {
		h.add(c)
	}
	if h.stateFile != "" {
		h.reattach()
	}
	debug, err := debugPlugins()
	if err != nil {
		os.RemoveAll(socketDir)
		return nil, err
	}
	for name, entry := range debug {
		p, ok := h.byName[name]
		if !ok {
			p = h.add(candidate{name: name, path: fmt.Sprintf("(run by hand, pid %d)", entry.PID)})
		}
		p.refused = nil
		if err := p.reattach(entry); err != nil {
			os.RemoveAll(socketDir)
			return nil, fmt.Errorf("%s: plugin %s: %w", DebugEnv, name, err)
		}
		h.logger.Warn("using a plugin run by hand", "plugin", name, "pid", entry.PID, "addr", entry.Addr)
	}
	return h, nil
}

func (h *Host) add(c candidate) *Plugin {
	secrets := &secretSet{}
	p := &Plugin{
		Name:    c.name,
		Path:    c.path,
		host:    h,
		sum:     c.sum,
		refused: c.refused,
		logger:  slog.New(redactHandler{h.logger.Handler(), secrets}),
		stderr:  newTail(stderrLines),
		secrets: secrets,
		drivers: map[*hostDriver]struct{}{},
	}
	if c.refused != nil {
		h.logger.Warn("plugin refused", "plugin", c.name, "path", c.path, "err", c.refused)
	}
	h.plugins = append(h.plugins, p)
	h.byName[p.Name] = p
	return p
}

// Load adds the plugin binary at path, outside the plugin directories; it
// takes precedence over a discovered plugin of the same name. Its file name
// must be pocketci-driver-<name>.
func (h *Host) Load(path string) (*Plugin, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("plugin path %q: %w", path, err)
	}
	base := filepath.Base(abs)
	name := strings.TrimPrefix(base, Prefix)
	if !strings.HasPrefix(base, Prefix) || !validName.MatchString(name) {
		return nil, fmt.Errorf("plugin path %q: the file name must be %s<name> with <name> matching %s", path, Prefix, validName)
	}
	info, err := os.Stat(abs)
	if err != nil {
		return nil, fmt.Errorf("plugin path %q: %w", path, err)
	}
	if !info.Mode().IsRegular() || info.Mode().Perm()&0o111 == 0 {
		return nil, fmt.Errorf("plugin path %q is not an executable file (mode %s)", path, info.Mode())
	}
	if old, ok := h.byName[name]; ok {
		h.plugins = deletePlugin(h.plugins, old)
		h.replaced = append(h.replaced, old)
	}
	for _, c := range scanDir(filepath.Dir(abs), h.logger) {
		if c.path == abs {
			return h.add(c), nil
		}
	}
	return h.add(candidate{name: name, path: abs}), nil
}

func deletePlugin(ps []*Plugin, p *Plugin) []*Plugin {
	out := ps[:0]
	for _, q := range ps {
		if q != p {
			out = append(out, q)
		}
	}
	return out
}

// Plugins returns the discovered plugins in precedence order.
func (h *Host) Plugins() []*Plugin {
	return append([]*Plugin(nil), h.plugins...)
}

// Plugin returns the plugin called name.
func (h *Host) Plugin(name string) (*Plugin, error) {
	p, ok := h.byName[name]
	if !ok {
		names := make([]string, 0, len(h.plugins))
		for _, q := range h.plugins {
			names = append(names, q.Name)
		}
		return nil, fmt.Errorf("no plugin named %q (want a file %s%s in a plugin directory; found: %s)",
			name, Prefix, name, strings.Join(names, ", "))
	}
	return p, nil
}

// Providers returns a driver provider for every usable plugin, in
// precedence order, to put in an orchestra.DriverRegistry beside (or in
// the place of) drivers compiled into the program.
func (h *Host) Providers() []orchestra.DriverProvider {
	var out []orchestra.DriverProvider
	for _, p := range h.plugins {
		if p.refused == nil {
			out = append(out, p.Provider())
		}
	}
	return out
}

// Registry is a driver registry of builtins and the host's plugins; a
// plugin takes the place of a builtin of the same name.
func (h *Host) Registry(builtins ...orchestra.DriverProvider) *orchestra.DriverRegistry {
	plugins := h.Providers()
	all := slices.DeleteFunc(slices.Clone(builtins), func(b orchestra.DriverProvider) bool {
		return slices.ContainsFunc(plugins, func(p orchestra.DriverProvider) bool { return p.Name() == b.Name() })
	})
	return orchestra.NewDriverRegistry(append(all, plugins...))
}

// Close closes every driver the host opened and stops every plugin it
// started.
func (h *Host) Close() error {
	h.closed.Store(true)
	if h.closeRan.Swap(true) {
		return nil
	}
	var errs []error
	for _, p := range append(h.Plugins(), h.replaced...) {
		if err := p.stop(); err != nil {
			errs = append(errs, fmt.Errorf("stop plugin %s: %w", p.Name, err))
		}
	}
	for _, dir := range append(h.oldSocketDirs, h.socketDir) {
		if err := os.RemoveAll(dir); err != nil {
			errs = append(errs, fmt.Errorf("remove plugin socket directory: %w", err))
		}
	}
	return errors.Join(errs...)
}

// Kill kills every plugin the host started, with its process group, at
// once: no driver is closed and no plugin is asked to shut down. It is the
// last resort for a caller that is about to exit and cannot wait (a second
// Ctrl-C): each plugin's reaper stays armed, and once the host process has
// exited it runs Config.OrphanCleanup for the ephemeral namespaces and
// removes the host's directory. After Kill every call returns
// orchestra.ErrClosed.
func (h *Host) Kill() {
	h.closed.Store(true)
	for _, p := range append(h.Plugins(), h.replaced...) {
		p.kill()
	}
}

// checkOpen returns an error wrapping orchestra.ErrClosed once the host is
// closed.
func (h *Host) checkOpen(ctx context.Context, plugin string) error {
	if h.closed.Load() && ctx.Value(closingKey{}) == nil {
		return fmt.Errorf("plugin %s: the host is closed: %w", plugin, orchestra.ErrClosed)
	}
	return nil
}

// closingKey marks the calls Close itself makes, which may still restart
// a plugin to close its drivers.
type closingKey struct{}

func hostClosing(ctx context.Context) context.Context {
	return context.WithValue(ctx, closingKey{}, true)
}

// lowestLevel is the lowest level logger has enabled, passed on to plugins
// so that they do not send records the host would drop.
func lowestLevel(logger *slog.Logger) slog.Level {
	for _, l := range []slog.Level{slog.LevelDebug, slog.LevelInfo, slog.LevelWarn} {
		if logger.Enabled(context.Background(), l) {
			return l
		}
	}
	return slog.LevelError
}

// socketBase is where the host makes its private socket directory: the
// temporary directory, unless it is so long that the sockets go-plugin and
// the plugins put two levels below it would pass the 108-byte limit of a
// unix socket path; then /tmp.
func socketBase() string {
	base := os.TempDir()
	if len(base) > 40 {
		if info, err := os.Stat("/tmp"); err == nil && info.IsDir() {
			return "/tmp"
		}
	}
	return base
}

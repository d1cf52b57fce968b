package host

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/go-plugin"

	"github.com/jtarchie/pocketci/internal/wire"
)

// state is what a detached host leaves for the next one: the plugins still
// running and where to reach them.
type state struct {
	HostPID   int           `json:"host_pid"`
	SocketDir string        `json:"socket_dir"`
	Plugins   []statePlugin `json:"plugins"`
}

type statePlugin struct {
	Name            string `json:"name"`
	Path            string `json:"path"`
	PID             int    `json:"pid"`
	Addr            string `json:"addr"`
	ProtocolVersion int    `json:"protocol_version"`
	// Debug marks a plugin run by hand (see DebugEnv).
	Debug bool `json:"-"`
}

// DebugEnv names plugins that a person runs by hand, for instance under a
// debugger, for the host to use instead of starting its own: a JSON object
// from plugin name to {"pid": …, "addr": …}, as the plugin prints it when
// started with pluginsdk.DebugEnv set. The host neither watches nor stops
// such a plugin.
const DebugEnv = "ORCHESTRA_REATTACH_PLUGINS"

// debugPlugins parses DebugEnv.
func debugPlugins() (map[string]statePlugin, error) {
	v := os.Getenv(DebugEnv)
	if v == "" {
		return nil, nil
	}
	var raw map[string]struct {
		PID  int    `json:"pid"`
		Addr string `json:"addr"`
	}
	if err := json.Unmarshal([]byte(v), &raw); err != nil {
		return nil, fmt.Errorf("%s: want {\"<plugin>\": {\"pid\": N, \"addr\": \"/path/to/socket\"}}: %w", DebugEnv, err)
	}
	out := map[string]statePlugin{}
	for name, r := range raw {
		if r.PID <= 0 || r.Addr == "" {
			return nil, fmt.Errorf("%s: plugin %q needs a pid and an addr", DebugEnv, name)
		}
		out[name] = statePlugin{Name: name, PID: r.PID, Addr: r.Addr, ProtocolVersion: wire.ProtocolMajor, Debug: true}
	}
	return out, nil
}

// Detach stops the host without stopping its plugins: each plugin that
// supports it (protocol 1.1, capability "detach") keeps running with its
// drivers and their tasks, and waits up to timeout for a host built with the
// same Config.StateFile to attach again (New does that). Plugins that cannot
// detach are stopped as Close would. After Detach the Host is not usable.
//
// Reattach trusts the state file to name the plugin processes: New checks
// that each PID runs the plugin binary it expects (and, with SHA256SUMS, that
// the running image matches the pin), but go-plugin cannot combine reattach
// with AutoMTLS, so Detach refuses when AutoMTLS is on.
func (h *Host) Detach(timeout time.Duration) error {
	if h.stateFile == "" {
		return errors.New("detach: the host has no Config.StateFile to leave its plugins in")
	}
	if h.autoMTLS {
		return errors.New("detach: go-plugin cannot reattach to plugins started with AutoMTLS; use Close")
	}
	h.closed.Store(true)
	h.closeRan.Store(true)
	st := state{HostPID: os.Getpid(), SocketDir: h.socketDir}
	var errs []error
	for _, p := range h.plugins {
		entry, err := p.detach(timeout)
		switch {
		case err != nil:
			h.logger.Warn("plugin cannot detach: stopping it", "plugin", p.Name, "err", err)
			if err := p.stop(); err != nil {
				errs = append(errs, err)
			}
		case entry != nil:
			st.Plugins = append(st.Plugins, *entry)
		}
	}
	// A plugin Load replaced is not the host's to hand on: it stops.
	for _, p := range h.replaced {
		if err := p.stop(); err != nil {
			errs = append(errs, err)
		}
	}
	if len(st.Plugins) == 0 {
		return errors.Join(append(errs, os.RemoveAll(h.socketDir))...)
	}
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("detach: %w", err)
	}
	tmp := h.stateFile + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return fmt.Errorf("detach: write state: %w", err)
	}
	if err := os.Rename(tmp, h.stateFile); err != nil {
		return fmt.Errorf("detach: write state: %w", err)
	}
	return errors.Join(errs...)
}

// detach tells a running plugin that its host goes away and lets go of it
// without stopping it. It returns nil, nil for a plugin that is not running.
func (p *Plugin) detach(timeout time.Duration) (*statePlugin, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.running() {
		return nil, nil
	}
	if !hasCapability(p.info, wire.CapabilityDetach) {
		return nil, fmt.Errorf("plugin %s speaks protocol %s, without Detach", p.Name, p.info.ProtocolVersion)
	}
	rc := p.client.ReattachConfig()
	if rc == nil || rc.Addr == nil {
		return nil, fmt.Errorf("plugin %s: no address to reattach to", p.Name)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.rpc.Detach(ctx, timeout); err != nil {
		return nil, err
	}
	entry := &statePlugin{Name: p.Name, Path: p.Path, PID: p.pid, Addr: rc.Addr.String(), ProtocolVersion: p.client.NegotiatedVersion()}
	// Let go of the process: its exit is no longer this host's to report,
	// and its reaper must not kill it when this host exits.
	p.stopping.Store(true)
	if p.proc != nil {
		p.proc.disarm()
	}
	p.client, p.proc = nil, nil
	clear(p.drivers)
	return entry, nil
}

func hasCapability(info wire.Info, c string) bool {
	for _, have := range info.Capabilities {
		if have == c {
			return true
		}
	}
	return false
}

// reattach reads the state a detached host left and attaches to each plugin
// in it that is still running and still the binary this host would run. The
// state file is consumed.
func (h *Host) reattach() {
	data, err := os.ReadFile(h.stateFile)
	if errors.Is(err, os.ErrNotExist) {
		return
	}
	if err != nil {
		h.logger.Warn("cannot read plugin state; starting plugins afresh", "file", h.stateFile, "err", err)
		return
	}
	os.Remove(h.stateFile)
	var st state
	if err := json.Unmarshal(data, &st); err != nil {
		h.logger.Warn("bad plugin state; starting plugins afresh", "file", h.stateFile, "err", err)
		return
	}
	if st.SocketDir != "" {
		h.oldSocketDirs = append(h.oldSocketDirs, st.SocketDir)
	}
	for _, entry := range st.Plugins {
		p, ok := h.byName[entry.Name]
		if !ok || p.Path != entry.Path {
			h.logger.Warn("not reattaching a plugin this host would not run; it exits when its detach timeout ends",
				"plugin", entry.Name, "path", entry.Path, "pid", entry.PID)
			continue
		}
		if err := p.reattach(entry); err != nil {
			h.logger.Warn("cannot reattach plugin; it starts afresh on first use", "plugin", entry.Name, "pid", entry.PID, "err", err)
			continue
		}
		h.logger.Info("reattached plugin", "plugin", p.Name, "pid", entry.PID, "drivers", len(p.adopted))
	}
}

// reattach connects to the running plugin process described by entry.
func (p *Plugin) reattach(entry statePlugin) error {
	if p.refused != nil {
		return p.refused
	}
	if entry.Debug {
		return p.connect(entry)
	}
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", entry.PID))
	if err != nil {
		return fmt.Errorf("process %d: %w", entry.PID, err)
	}
	want, _ := filepath.EvalSymlinks(p.Path)
	if exe != want && exe != p.Path {
		return fmt.Errorf("process %d runs %s, not %s", entry.PID, exe, p.Path)
	}
	if p.sum != "" {
		got, err := fileSHA256(fmt.Sprintf("/proc/%d/exe", entry.PID))
		if err != nil {
			return err
		}
		if got != p.sum {
			return fmt.Errorf("process %d runs an image with SHA-256 %s, but %s pins %s", entry.PID, got, SumsFile, p.sum)
		}
	}
	return p.connect(entry)
}

// connect reattaches to the plugin process of entry. A debug entry is a
// plugin a person runs by hand: the host neither watches nor stops it.
func (p *Plugin) connect(entry statePlugin) error {
	plugins, ok := wire.ClientPlugins()[entry.ProtocolVersion]
	if !ok {
		return fmt.Errorf("process %d speaks protocol %d, which this host does not", entry.PID, entry.ProtocolVersion)
	}
	cfg := p.clientConfig(p.logger.With("plugin", p.Name))
	// go-plugin dispenses from Plugins, not VersionedPlugins, when it
	// reattaches: there is no handshake to negotiate a version.
	cfg.Plugins = plugins
	cfg.Reattach = &plugin.ReattachConfig{
		Protocol:        plugin.ProtocolGRPC,
		ProtocolVersion: entry.ProtocolVersion,
		Addr:            &net.UnixAddr{Net: "unix", Name: entry.Addr},
		Pid:             entry.PID,
		Test:            entry.Debug,
	}
	client := plugin.NewClient(cfg)
	fail := func(err error) error {
		client.Kill()
		return err
	}
	proto, err := client.Client()
	if err != nil {
		return fail(fmt.Errorf("connect: %w", err))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rpc, info, err := p.handshake(ctx, proto)
	if err != nil {
		return fail(fmt.Errorf("process %d: %w", entry.PID, err))
	}
	// A reattached plugin's bulk socket is where it was put when it
	// started, in a directory of the host that started it.
	if err := rpc.Accept(info, filepath.Dir(info.BulkAddr)); err != nil {
		return fail(err)
	}
	var drivers []wire.OpenDriver
	if !entry.Debug {
		if drivers, err = rpc.Attach(ctx, os.Getpid()); err != nil {
			return fail(err)
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.commit(client, nil, entry.PID, rpc, info)
	if entry.Debug {
		// Closing go-plugin's client would ask the plugin to shut down;
		// closing its connection only disconnects.
		if gc, ok := proto.(*plugin.GRPCClient); ok {
			p.byHand = gc.Conn
		}
	}
	p.adopted = map[string]wire.OpenDriver{}
	for _, d := range drivers {
		p.adopted[d.Namespace] = d
	}
	return nil
}

// adopt takes the driver kept open for namespace across a host restart.
func (p *Plugin) adopt(namespace string) (wire.OpenDriver, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	od, ok := p.adopted[namespace]
	delete(p.adopted, namespace)
	return od, ok
}

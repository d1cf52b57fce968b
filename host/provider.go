package host

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"

	"github.com/jtarchie/pocketci/internal/wire"
	"github.com/jtarchie/pocketci/orchestra"
)

// PluginConfig is a plugin driver's config as the host holds it: the JSON
// the plugin decodes. It never prints what it holds.
type PluginConfig = wire.RawConfig

// Provider is the plugin as an orchestra.DriverProvider: NewDriver opens a
// driver instance in the plugin (starting it if needed), UnmarshalConfig has
// the plugin check the config, and a config may be the plugin's own
// PluginConfig or the typed config of the same driver compiled in, which is
// sent as its JSON.
func (p *Plugin) Provider() orchestra.DriverProvider { return pluginProvider{p} }

type pluginProvider struct{ p *Plugin }

var _ orchestra.DriverProvider = pluginProvider{}

func (pp pluginProvider) Name() string { return pp.p.Name }

func (pp pluginProvider) EmptyConfig() orchestra.DriverConfig { return PluginConfig{Driver: pp.p.Name} }

func (pp pluginProvider) UnmarshalConfig(raw json.RawMessage) (orchestra.DriverConfig, error) {
	ctx, cancel := context.WithTimeout(context.Background(), pp.p.host.startTimeout)
	defer cancel()
	if err := pp.p.CheckConfig(ctx, raw); err != nil {
		return nil, err
	}
	return PluginConfig{Driver: pp.p.Name, JSON: raw}, nil
}

// NewDriver opens a driver for namespace with cfg. The plugin's own logs
// reach the host's logger; logger is not used.
func (pp pluginProvider) NewDriver(ctx context.Context, namespace string, cfg orchestra.DriverConfig, _ *slog.Logger) (orchestra.Driver, error) {
	raw, err := wire.ConfigJSON(pp.p.Name, cfg)
	if err != nil {
		return nil, fmt.Errorf("plugin %s: Open: %w", pp.p.Name, err)
	}
	ctx, cancel := context.WithTimeout(ctx, pp.p.host.startTimeout)
	defer cancel()
	return pp.p.Open(ctx, namespace, OpenOptions{Config: raw})
}

package host

import (
	"context"
	"encoding/json"

	"github.com/jtarchie/pocketci/internal/pluginprovider"
	"github.com/jtarchie/pocketci/orchestra"
)

// PluginConfig is a plugin driver's config as the host holds it: the JSON
// the plugin decodes. It never prints what it holds.
type PluginConfig = pluginprovider.RawConfig

// Provider is the plugin as an orchestra.DriverProvider: NewDriver opens a
// driver instance in the plugin (starting it if needed, within the host's
// StartTimeout), UnmarshalConfig has the plugin check the config, and a
// config may be the plugin's own PluginConfig or the typed config of the
// same driver compiled in, which is sent as its JSON.
func (p *Plugin) Provider() orchestra.DriverProvider {
	bounded := func(ctx context.Context) (context.Context, context.CancelFunc) {
		return context.WithTimeout(ctx, p.host.startTimeout)
	}
	return pluginprovider.New(p.Name,
		func(ctx context.Context, raw json.RawMessage) error {
			ctx, cancel := bounded(ctx)
			defer cancel()
			return p.CheckConfig(ctx, raw)
		},
		func(ctx context.Context, namespace string, raw json.RawMessage) (orchestra.Driver, error) {
			ctx, cancel := bounded(ctx)
			defer cancel()
			return p.Open(ctx, namespace, OpenOptions{Config: raw})
		})
}

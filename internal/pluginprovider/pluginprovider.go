// Package pluginprovider is a plugin's driver as an
// orchestra.DriverProvider, for the host and pluginsdk/sdktest: the config
// it keeps without printing it (RawConfig), and a provider whose calls go to
// the plugin through the functions it is given.
package pluginprovider

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"

	"github.com/jtarchie/pocketci/orchestra"
)

// RawConfig is a plugin driver's config as the host holds it: the JSON the
// plugin decodes. It never prints its contents (a config may carry
// secrets); MarshalJSON gives them back for a caller that stores configs.
type RawConfig struct {
	Driver string
	JSON   json.RawMessage
}

var _ orchestra.DriverConfig = RawConfig{}

// DriverName is the driver the config is for.
func (c RawConfig) DriverName() string { return c.Driver }

// String says what the config is, not what it holds.
func (c RawConfig) String() string {
	return fmt.Sprintf("config of driver %s (%d bytes, not shown)", c.Driver, len(c.JSON))
}

// GoString is String, so that %#v shows nothing either.
func (c RawConfig) GoString() string { return c.String() }

// LogValue keeps the config out of slog records.
func (c RawConfig) LogValue() slog.Value { return slog.StringValue(c.String()) }

// MarshalJSON is the config's JSON.
func (c RawConfig) MarshalJSON() ([]byte, error) {
	if len(c.JSON) == 0 {
		return []byte("null"), nil
	}
	return c.JSON, nil
}

// ConfigJSON is the JSON to send a plugin called name for cfg: a RawConfig's
// own, or a typed config (the same driver's, compiled in) marshalled; nil
// for none.
func ConfigJSON(name string, cfg orchestra.DriverConfig) (json.RawMessage, error) {
	if cfg == nil {
		return nil, nil
	}
	raw, isRaw := cfg.(RawConfig)
	if d := cfg.DriverName(); d != name && (d != "" || !isRaw) {
		return nil, fmt.Errorf("%w: a config for driver %q given to driver %q", orchestra.ErrInvalidConfig, d, name)
	}
	if isRaw {
		return raw.JSON, nil
	}
	b, err := json.Marshal(cfg)
	if err != nil {
		return nil, fmt.Errorf("%w: marshal %T: %w", orchestra.ErrInvalidConfig, cfg, err)
	}
	return b, nil
}

// New is the DriverProvider of a plugin called name: UnmarshalConfig
// has check decode and validate the config in the plugin and keeps it as a
// RawConfig; NewDriver sends open the JSON of a RawConfig, or of the typed
// config of the same driver compiled in.
func New(name string, check func(context.Context, json.RawMessage) error,
	open func(ctx context.Context, namespace string, config json.RawMessage) (orchestra.Driver, error)) orchestra.DriverProvider {
	return &pluginProvider{name: name, check: check, open: open}
}

type pluginProvider struct {
	name  string
	check func(context.Context, json.RawMessage) error
	open  func(context.Context, string, json.RawMessage) (orchestra.Driver, error)
}

var _ orchestra.DriverProvider = (*pluginProvider)(nil)

func (p *pluginProvider) Name() string { return p.name }

func (p *pluginProvider) EmptyConfig() orchestra.DriverConfig { return RawConfig{Driver: p.name} }

func (p *pluginProvider) UnmarshalConfig(raw json.RawMessage) (orchestra.DriverConfig, error) {
	if err := p.check(context.Background(), raw); err != nil {
		return nil, err
	}
	return RawConfig{Driver: p.name, JSON: raw}, nil
}

// NewDriver opens a driver for namespace with cfg. The plugin's own logs go
// where its host sends them; logger is not used.
func (p *pluginProvider) NewDriver(ctx context.Context, namespace string, cfg orchestra.DriverConfig, _ *slog.Logger) (orchestra.Driver, error) {
	raw, err := ConfigJSON(p.name, cfg)
	if err != nil {
		return nil, fmt.Errorf("plugin %s: Open: %w", p.name, err)
	}
	return p.open(ctx, namespace, raw)
}

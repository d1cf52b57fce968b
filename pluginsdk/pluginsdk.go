// Package pluginsdk turns an orchestra driver into a plugin binary.
//
// A driver and its orchestra.DriverProvider become a plugin with a
// three-line main:
//
//	func main() {
//		pluginsdk.Serve(mydriver.Provider())
//	}
//
// Build it as pocketci-driver-mydriver and put it in a plugin directory; the
// orchestra host (package host) finds it, starts it once, and opens one driver
// instance per namespace inside it. The plugin speaks HashiCorp go-plugin over
// gRPC; the service, which plugins in other languages implement, is in
// proto/driverv1.
package pluginsdk

import (
	"io"
	"log/slog"

	"github.com/jtarchie/pocketci/internal/pluginproc"
	"github.com/jtarchie/pocketci/internal/wire"
	"github.com/jtarchie/pocketci/orchestra"
)

const (
	// SDKVersion is the version of this SDK, reported by every plugin built
	// with it.
	SDKVersion = wire.SDKVersion
	// ProtocolVersion is the wire protocol version (major.minor) this SDK
	// speaks. A host speaks every minor version of its major version.
	ProtocolVersion = wire.ProtocolVersion
	// DebugEnv, set in a plugin's environment, makes Serve run the plugin by
	// hand (for instance under a debugger): it serves until interrupted and
	// prints the ORCHESTRA_REATTACH_PLUGINS value with which orchestra uses
	// it instead of starting its own.
	DebugEnv = pluginproc.DebugEnv
	// LogLevelEnv is the environment variable through which the host tells
	// a plugin the lowest log level it wants ("debug", "info", "warn",
	// "error"). Serve applies it to the logger each driver gets.
	LogLevelEnv = pluginproc.LogLevelEnv
)

// Serve runs provider's driver as the plugin called provider.Name() and
// returns when the host stops it. The host opens one driver per namespace
// and config: the plugin decodes each config with provider.UnmarshalConfig
// and builds the driver with provider.NewDriver, whose logger reaches the
// host's logger with level and attributes.
//
// Started from a shell rather than by a host, Serve prints what the binary
// is and how to install it, and exits with status 1. When the host dies
// without stopping the plugin, the plugin closes every driver it opened (so
// their containers, processes and VMs go with it) and exits, unless
// KeepOnHostExit is given.
func Serve(provider orchestra.DriverProvider, opts ...Option) {
	var cfg serveConfig
	for _, o := range opts {
		o(&cfg)
	}
	pluginproc.Serve(provider, pluginproc.ServeOptions{KeepOnHostExit: cfg.keepOnHostExit})
}

// Option changes how Serve runs a plugin.
type Option func(*serveConfig)

type serveConfig struct {
	keepOnHostExit bool
}

// KeepOnHostExit is for drivers whose resources belong to a platform that
// outlives the plugin (a container engine, a cloud): when the host dies, the
// plugin exits without closing its drivers, so their containers keep running
// and a new host finds them again by ID (orchestra.Driver.GetContainer).
// Without it, the plugin closes every driver first, so processes and VMs it
// owns go with it.
func KeepOnHostExit() Option {
	return func(c *serveConfig) { c.keepOnHostExit = true }
}

// NewLogHandler returns a slog handler that writes JSON records in the shape
// go-plugin forwards to the host's logger (hclog's "@level", "@message" and
// "@timestamp" keys), keeping every attribute. Serve's loggers use it; a
// plugin that logs outside them may too.
func NewLogHandler(w io.Writer, level slog.Leveler) slog.Handler {
	return pluginproc.NewLogHandler(w, level)
}

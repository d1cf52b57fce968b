package host

import (
	"strings"

	"github.com/jtarchie/pocketci/internal/wire"
)

// Limits on what a plugin says about itself, which the host keeps and prints.
const (
	maxInfoString   = 256
	maxCapabilities = 64
	maxCapability   = 64
)

// boundInfo cuts the strings of a plugin's Info to their limits, and says so.
func (p *Plugin) boundInfo(info wire.Info) wire.Info {
	cut := func(field string, s string, limit int) string {
		if len(s) <= limit {
			return s
		}
		p.logger.Warn("plugin's Info field too long: truncated", "plugin", p.Name, "field", field, "bytes", len(s), "limit", limit)
		return strings.ToValidUTF8(s[:limit], "") + truncMarker
	}
	info.PluginVersion = cut("plugin_version", info.PluginVersion, maxInfoString)
	info.SDKVersion = cut("sdk_version", info.SDKVersion, maxInfoString)
	info.ProtocolVersion = cut("protocol_version", info.ProtocolVersion, maxInfoString)
	if len(info.Capabilities) > maxCapabilities {
		p.logger.Warn("plugin lists too many capabilities: keeping the first", "plugin", p.Name, "count", len(info.Capabilities), "limit", maxCapabilities)
		info.Capabilities = info.Capabilities[:maxCapabilities]
	}
	caps := make([]string, len(info.Capabilities))
	for i, c := range info.Capabilities {
		caps[i] = cut("capabilities", c, maxCapability)
	}
	info.Capabilities = caps
	return info
}

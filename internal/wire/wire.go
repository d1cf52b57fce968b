// Package wire is the orchestra driver protocol's implementation, shared by
// the host (package host) and the plugin SDK (through internal/pluginproc):
// the go-plugin handshake and plugin sets, the error mapping, and its two
// halves in mirrored files named for their side: client_*.go (the host's
// half, Client) and server_*.go (the plugin's half, Server).
//
// The wire format itself is the public package proto/driverv1; the bulk
// socket's framing is internal/bulk.
package wire

import (
	"context"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	"github.com/jtarchie/pocketci/proto/driverv1"
)

const (
	// SDKVersion is the version of this SDK, reported by every plugin built with it.
	SDKVersion = "0.2.0"
	// ProtocolMajor is the wire protocol's major version, negotiated by
	// go-plugin. A host and a plugin with no major version in common refuse
	// each other with an error naming both sides' versions.
	ProtocolMajor = 1
	// ProtocolMinor is the wire protocol's minor version; docs/protocol.md
	// says which older minors a host still serves.
	ProtocolMinor = 4
	// ProtocolVersion is ProtocolMajor.ProtocolMinor, as Info reports it.
	ProtocolVersion = "1.4"
	// PluginKey is the name the driver service is dispensed under.
	PluginKey = "driver"
)

// HandshakeConfig is the go-plugin handshake shared by host and plugins. The
// magic cookie is not a secret: it only tells a plugin binary started from a
// shell that it was not started by a host.
func HandshakeConfig() plugin.HandshakeConfig {
	return plugin.HandshakeConfig{
		ProtocolVersion:  ProtocolMajor,
		MagicCookieKey:   "POCKETCI_DRIVER_PLUGIN",
		MagicCookieValue: "4c1b5c2e-orchestra-driver",
	}
}

// Capabilities a plugin lists in Info (docs/protocol.md defines each).
const (
	// CapabilityBulk: Info.bulk_addr is a bulk socket that serves logs and
	// stdin connections.
	CapabilityBulk = "bulk"
	// CapabilityRun: the bulk socket serves Run streams.
	CapabilityRun = "run"
	// CapabilityDetach: the plugin serves Detach and Attach.
	CapabilityDetach = "detach"
	// CapabilityEphemeral: the plugin honours OpenRequest.ephemeral.
	CapabilityEphemeral = "ephemeral"
	// CapabilityConfig: the plugin serves CheckConfig and decodes
	// OpenRequest.config (protocol 1.4).
	CapabilityConfig = "config"
)

// sdkCapabilities are the capabilities of every plugin built with this SDK.
var sdkCapabilities = []string{CapabilityBulk, CapabilityRun, CapabilityDetach, CapabilityEphemeral, CapabilityConfig}

// Optional orchestra interfaces, as OpenResponse.implements names them.
const (
	ImplementsVolumeData = "VolumeDataAccessor"
	ImplementsSandbox    = "SandboxDriver"
)

// grpcPlugin is the go-plugin glue: the plugin side registers the server, the
// host side gets the raw gRPC client.
type grpcPlugin struct {
	plugin.NetRPCUnsupportedPlugin
	server driverv1.DriverServer
}

// GRPCServer registers the driver service on the plugin's gRPC server.
func (p *grpcPlugin) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	driverv1.RegisterDriverServer(s, p.server)
	return nil
}

// GRPCClient returns the host's client for the driver service.
func (p *grpcPlugin) GRPCClient(_ context.Context, _ *plugin.GRPCBroker, c *grpc.ClientConn) (interface{}, error) {
	return driverv1.NewDriverClient(c), nil
}

// ClientPlugins is the plugin set a host passes to go-plugin's ClientConfig.
func ClientPlugins() map[int]plugin.PluginSet { return ServerPlugins(nil) }

// ServerPlugins is the plugin set that serves service, for go-plugin's
// ServeConfig.
func ServerPlugins(service driverv1.DriverServer) map[int]plugin.PluginSet {
	return map[int]plugin.PluginSet{ProtocolMajor: {PluginKey: &grpcPlugin{server: service}}}
}

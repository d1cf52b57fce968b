// Command minplugin is the baseline fixture: the smallest go-plugin gRPC
// plugin, with the same go-plugin version as pluginsdk, no TLS, and one
// trivial unary method, /bench.Min/Ping (Empty in, Empty out).
package main

import (
	"context"
	"os"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/emptypb"
)

// Handshake must match the benchmark's client side.
var handshake = plugin.HandshakeConfig{
	ProtocolVersion:  1,
	MagicCookieKey:   "BENCH_MIN_PLUGIN",
	MagicCookieValue: "min",
}

type pinger interface {
	Ping(context.Context, *emptypb.Empty) (*emptypb.Empty, error)
}

type minServer struct{}

func (minServer) Ping(context.Context, *emptypb.Empty) (*emptypb.Empty, error) {
	return &emptypb.Empty{}, nil
}

var serviceDesc = grpc.ServiceDesc{
	ServiceName: "bench.Min",
	HandlerType: (*pinger)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Ping",
		Handler: func(srv any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			in := new(emptypb.Empty)
			if err := dec(in); err != nil {
				return nil, err
			}
			return srv.(pinger).Ping(ctx, in)
		},
	}},
}

type minPlugin struct{ plugin.NetRPCUnsupportedPlugin }

func (minPlugin) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	s.RegisterService(&serviceDesc, minServer{})
	return nil
}

func (minPlugin) GRPCClient(_ context.Context, _ *plugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
	return c, nil
}

func main() {
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: handshake,
		Plugins:         plugin.PluginSet{"min": minPlugin{}},
		GRPCServer:      plugin.DefaultGRPCServer,
		Logger:          hclog.New(&hclog.LoggerOptions{Output: os.Stderr, JSONFormat: true, Level: hclog.Warn}),
	})
}

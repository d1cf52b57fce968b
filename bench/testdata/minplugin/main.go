// Command minplugin is the baseline fixture: the smallest go-plugin gRPC
// plugin, with the same go-plugin version as pluginsdk, no TLS, and one
// trivial unary method, /bench.Min/Ping (Empty in, Empty out).
//
// For the stream ceilings it also serves /bench.Min/Source (an Int64Value N
// in, then N bytes out as BytesValue messages of up to 1 MiB, from one
// reusable buffer) and /bench.Min/Sink (BytesValue messages in, their total
// length out as an Int64Value).
package main

import (
	"context"
	"errors"
	"io"
	"os"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
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
	Streams: []grpc.StreamDesc{
		{StreamName: "Source", ServerStreams: true, Handler: source},
		{StreamName: "Sink", ClientStreams: true, Handler: sink},
	},
}

func source(_ any, stream grpc.ServerStream) error {
	var n wrapperspb.Int64Value
	if err := stream.RecvMsg(&n); err != nil {
		return err
	}
	buf := make([]byte, 1<<20)
	for left := n.GetValue(); left > 0; {
		k := min(int64(len(buf)), left)
		if err := stream.SendMsg(&wrapperspb.BytesValue{Value: buf[:k]}); err != nil {
			return err
		}
		left -= k
	}
	return nil
}

func sink(_ any, stream grpc.ServerStream) error {
	var total int64
	for {
		var chunk wrapperspb.BytesValue
		if err := stream.RecvMsg(&chunk); err != nil {
			if errors.Is(err, io.EOF) {
				return stream.SendMsg(wrapperspb.Int64(total))
			}
			return err
		}
		total += int64(len(chunk.GetValue()))
	}
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

package wire

import (
	"context"
	"io"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/jtarchie/pocketci/orchestra"
	"github.com/jtarchie/pocketci/proto/driverv1"
)

// replyClient is a plugin connection whose every reply is made of fuzz
// bytes: a unary reply is replies[0] decoded as the response type (or an
// error when it does not decode); a stream yields replies[0], [1], [2] in
// turn, decoded by the host's own codec, then ends.
type replyClient struct {
	driverv1.DriverClient // nil: a call not overridden panics, which the fuzzer reports
	replies               [][]byte
}

func (r *replyClient) unary(resp proto.Message) error {
	if len(r.replies[0]) > 0 && r.replies[0][0] == 0xEE {
		return status.Error(codes.Unavailable, "the fuzzer says no")
	}
	if err := proto.Unmarshal(r.replies[0], resp); err != nil {
		return status.Error(codes.Internal, "grpc: failed to unmarshal the received message")
	}
	return nil
}

func (r *replyClient) Info(context.Context, *driverv1.InfoRequest, ...grpc.CallOption) (*driverv1.InfoResponse, error) {
	resp := &driverv1.InfoResponse{}
	return resp, r.unary(resp)
}

func (r *replyClient) Open(context.Context, *driverv1.OpenRequest, ...grpc.CallOption) (*driverv1.OpenResponse, error) {
	resp := &driverv1.OpenResponse{}
	return resp, r.unary(resp)
}

func (r *replyClient) Close(context.Context, *driverv1.CloseRequest, ...grpc.CallOption) (*driverv1.CloseResponse, error) {
	resp := &driverv1.CloseResponse{}
	return resp, r.unary(resp)
}

func (r *replyClient) RunContainer(context.Context, *driverv1.RunContainerRequest, ...grpc.CallOption) (*driverv1.RunContainerResponse, error) {
	resp := &driverv1.RunContainerResponse{}
	return resp, r.unary(resp)
}

func (r *replyClient) GetContainer(context.Context, *driverv1.GetContainerRequest, ...grpc.CallOption) (*driverv1.RunContainerResponse, error) {
	resp := &driverv1.RunContainerResponse{}
	return resp, r.unary(resp)
}

func (r *replyClient) Status(context.Context, *driverv1.ContainerRef, ...grpc.CallOption) (*driverv1.StatusResponse, error) {
	// Decoded as gRPC would, with the host's codec for this call.
	resp := &driverv1.StatusResponse{}
	if len(r.replies[0]) > 0 && r.replies[0][0] == 0xEE {
		return nil, status.Error(codes.Unavailable, "the fuzzer says no")
	}
	if err := (logCodec{encoding.GetCodecV2(protoCodecName)}).Unmarshal(mem.BufferSlice{mem.SliceBuffer(r.replies[0])}, resp); err != nil {
		return nil, status.Errorf(codes.Internal, "grpc: failed to unmarshal the received message: %v", err)
	}
	return resp, nil
}

func (r *replyClient) Cleanup(context.Context, *driverv1.ContainerRef, ...grpc.CallOption) (*driverv1.CleanupResponse, error) {
	resp := &driverv1.CleanupResponse{}
	return resp, r.unary(resp)
}

func (r *replyClient) CreateVolume(context.Context, *driverv1.CreateVolumeRequest, ...grpc.CallOption) (*driverv1.VolumeRef, error) {
	resp := &driverv1.VolumeRef{}
	return resp, r.unary(resp)
}

func (r *replyClient) CleanupVolume(context.Context, *driverv1.VolumeRef, ...grpc.CallOption) (*driverv1.CleanupResponse, error) {
	resp := &driverv1.CleanupResponse{}
	return resp, r.unary(resp)
}

func (r *replyClient) Attach(context.Context, *driverv1.AttachRequest, ...grpc.CallOption) (*driverv1.AttachResponse, error) {
	resp := &driverv1.AttachResponse{}
	return resp, r.unary(resp)
}

func (r *replyClient) Detach(context.Context, *driverv1.DetachRequest, ...grpc.CallOption) (*driverv1.DetachResponse, error) {
	resp := &driverv1.DetachResponse{}
	return resp, r.unary(resp)
}

func (r *replyClient) Logs(context.Context, *driverv1.LogsRequest, ...grpc.CallOption) (grpc.ServerStreamingClient[driverv1.LogChunk], error) {
	return typedStream[driverv1.LogsRequest, driverv1.LogChunk]{&replyStream{replies: r.replies}}, nil
}

func (r *replyClient) Run(context.Context, ...grpc.CallOption) (grpc.BidiStreamingClient[driverv1.RunRequest, driverv1.RunEvent], error) {
	return typedStream[driverv1.RunRequest, driverv1.RunEvent]{&replyStream{replies: r.replies}}, nil
}

func (r *replyClient) WriteStdin(context.Context, ...grpc.CallOption) (grpc.ClientStreamingClient[driverv1.StdinChunk, driverv1.WriteStdinResponse], error) {
	return typedStream[driverv1.StdinChunk, driverv1.WriteStdinResponse]{&replyStream{}}, nil
}

// replyStream yields the fuzz replies as stream messages; its trailer
// carries the last one as an exit code.
type replyStream struct {
	grpc.ClientStream
	replies [][]byte
	next    int
}

func (s *replyStream) RecvMsg(m any) error {
	if s.next >= len(s.replies) {
		return io.EOF
	}
	b := s.replies[s.next]
	s.next++
	return logCodec{encoding.GetCodecV2(protoCodecName)}.Unmarshal(mem.BufferSlice{mem.SliceBuffer(b)}, m)
}

// typedStream gives replyStream the typed methods of each stream kind.
type typedStream[Req, Resp any] struct{ *replyStream }

func (s typedStream[Req, Resp]) Recv() (*Resp, error) {
	m := new(Resp)
	return m, s.RecvMsg(m)
}

func (s typedStream[Req, Resp]) Send(*Req) error { return nil }

func (s typedStream[Req, Resp]) CloseAndRecv() (*Resp, error) { return new(Resp), nil }

func (s *replyStream) SendMsg(any) error { return nil }

func (s *replyStream) CloseSend() error { return nil }

func (s *replyStream) Trailer() metadata.MD {
	if len(s.replies) == 0 {
		return nil
	}
	return metadata.Pairs(statusTrailer, string(s.replies[len(s.replies)-1]))
}

func (s *replyStream) Header() (metadata.MD, error) { return nil, nil }

func (s *replyStream) Context() context.Context { return context.Background() }

// FuzzClientReplies feeds the host's client random and truncated replies
// for every call: whatever a plugin sends, the host returns a result or an
// error naming the plugin, and never panics.
func FuzzClientReplies(f *testing.F) {
	started, _ := proto.Marshal(&driverv1.RunEvent{Kind: &driverv1.RunEvent_Started{Started: &driverv1.RunContainerResponse{Container: &driverv1.ContainerRef{Container: 1}, LogFollower: true}}})
	output, _ := proto.Marshal(&driverv1.RunEvent{Kind: &driverv1.RunEvent_Output{Output: &driverv1.LogChunk{Stream: driverv1.LogChunk_STREAM_STDOUT, Data: []byte("hi")}}})
	end, _ := proto.Marshal(&driverv1.RunEvent{Kind: &driverv1.RunEvent_FollowEnd{FollowEnd: &driverv1.FollowEnd{Done: true, ExitCode: 256}}})
	run, _ := proto.Marshal(&driverv1.RunContainerResponse{LogFollower: true})
	chunk, _ := proto.Marshal(&driverv1.LogChunk{Stream: 7, Data: []byte("x")})
	status, _ := proto.Marshal(&driverv1.StatusResponse{Done: true, ExitCode: -7})
	vol, _ := proto.Marshal(&driverv1.VolumeRef{Volume: 0, Name: "v"})
	attach, _ := proto.Marshal(&driverv1.AttachResponse{Drivers: []*driverv1.OpenDriver{{Driver: 0}}})
	for op := range byte(10) {
		f.Add(op|0x80, started, output, end)
		f.Add(op, started, output, end)
		f.Add(op, run, chunk, []byte("300"))
		f.Add(op, status, vol, attach)
		f.Add(op, started[:len(started)/2], output[:3], []byte{})
	}
	f.Fuzz(func(t *testing.T, op byte, a, b, c []byte) {
		rpc := &replyClient{replies: [][]byte{a, b, c}}
		cl := NewClient("fuzz", rpc)
		cl.run = op&0x80 != 0
		d := cl.Adopt(OpenDriver{Handle: 1, Name: "fuzz", ContainerFinder: true})
		ctx := context.Background()
		check := func(call string, err error) {
			if err != nil && !strings.Contains(err.Error(), "plugin fuzz") {
				t.Fatalf("%s: error %q does not name the plugin", call, err)
			}
		}
		use := func(ct orchestra.Container) {
			st, err := ct.Status(ctx)
			check("Status", err)
			if err == nil && st.IsDone() && (st.ExitCode() < 0 || st.ExitCode() > 255) {
				t.Fatalf("exit code %d accepted", st.ExitCode())
			}
			check("Logs", ct.Logs(ctx, io.Discard, io.Discard))
			if f, ok := ct.(orchestra.LogFollower); ok {
				check("FollowLogs", f.FollowLogs(ctx, io.Discard, io.Discard))
			}
			st, err = ct.Status(ctx)
			check("Status", err)
			if err == nil && st.IsDone() && (st.ExitCode() < 0 || st.ExitCode() > 255) {
				t.Fatalf("exit code %d accepted after follow", st.ExitCode())
			}
			check("Cleanup", ct.Cleanup(ctx))
		}
		switch op & 0x7f % 8 {
		case 0:
			_, err := cl.Info(ctx)
			check("Info", err)
		case 1:
			od, err := cl.Open(ctx, "ns")
			check("Open", err)
			if err == nil {
				check("Close", od.Close())
			}
		case 2:
			ct, err := d.RunContainer(ctx, orchestra.Task{ID: "t", Command: []string{"x"}})
			check("RunContainer", err)
			if err == nil {
				use(ct)
			}
		case 3:
			ct, err := d.RunContainer(ctx, orchestra.Task{ID: "t", Command: []string{"x"}, Stdin: strings.NewReader("in")})
			check("RunContainer with stdin", err)
			if err == nil {
				use(ct)
			}
		case 4:
			ct, err := d.(orchestra.ContainerFinder).GetContainer(ctx, "t")
			check("GetContainer", err)
			if err == nil {
				use(ct)
			}
		case 5:
			v, err := d.CreateVolume(ctx, "v", 0)
			check("CreateVolume", err)
			if err == nil {
				check("CleanupVolume", v.Cleanup(ctx))
			}
		case 6:
			_, err := cl.Attach(ctx, 1)
			check("Attach", err)
		case 7:
			check("Detach", cl.Detach(ctx, 1))
		}
		check("Close", d.Close())
	})
}

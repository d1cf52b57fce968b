package wire

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/jtarchie/pocketci/internal/bulk"
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
	if err := (statusCodec{encoding.GetCodecV2(protoCodecName)}).Unmarshal(mem.BufferSlice{mem.SliceBuffer(r.replies[0])}, resp); err != nil {
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

// replyBulk is a bulk socket whose every answer is fuzz bytes: a Run
// stream gets run, a logs connection gets logs, as they are; stdin is read
// and dropped.
func replyBulk(t *testing.T, run, logs []byte) string {
	dir, err := os.MkdirTemp("", "fuzzbulk-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	l, err := net.Listen("unix", filepath.Join(dir, "bulk.sock"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				req := &driverv1.BulkRequest{}
				if bulk.ReadMessage(conn, req, maxBulkRequest) != nil {
					return
				}
				switch req.GetKind().(type) {
				case *driverv1.BulkRequest_Run:
					_, _ = conn.Write(run)
				case *driverv1.BulkRequest_Logs:
					_, _ = conn.Write(logs)
				default:
					_, _ = io.Copy(io.Discard, conn)
				}
			}()
		}
	}()
	return l.Addr().String()
}

// message is m with its length prefix, as a Run stream carries it.
func message(m proto.Message) []byte {
	var b bytes.Buffer
	_ = bulk.WriteMessage(&b, m)
	return b.Bytes()
}

// frames is a logs connection's bytes: stdout "hi", an exit frame, the end.
func frames(exit uint32, end error) []byte {
	var b bytes.Buffer
	fw := bulk.NewWriter(&b, false)
	_, _ = fw.Stream(bulk.Data).Write([]byte("hi"))
	_ = fw.Frame(bulk.Exit, binary.BigEndian.AppendUint32(nil, exit))
	_ = fw.End(toStatus(end))
	return b.Bytes()
}

// FuzzClientReplies feeds the host's client random and truncated replies
// for every call: whatever a plugin sends, the host returns a result or an
// error naming the plugin, and never panics.
func FuzzClientReplies(f *testing.F) {
	started := message(&driverv1.RunEvent{Kind: &driverv1.RunEvent_Started{Started: &driverv1.RunContainerResponse{Container: &driverv1.ContainerRef{Container: 1}, LogFollower: true, ContainerId: "t"}}})
	failedOK := message(&driverv1.RunEvent{Kind: &driverv1.RunEvent_Failed{Failed: &driverv1.Outcome{}}})
	logs := frames(0, nil)
	badExit := frames(256, nil)
	run, _ := proto.Marshal(&driverv1.RunContainerResponse{LogFollower: true})
	status, _ := proto.Marshal(&driverv1.StatusResponse{Done: true, ExitCode: -7})
	vol, _ := proto.Marshal(&driverv1.VolumeRef{Volume: 0, Name: "v"})
	attach, _ := proto.Marshal(&driverv1.AttachResponse{Drivers: []*driverv1.OpenDriver{{Driver: 0}}})
	for op := range byte(10) {
		f.Add(op, run, started, logs)
		f.Add(op, status, started, badExit)
		f.Add(op, vol, failedOK, logs[:len(logs)-3])
		f.Add(op, attach, started[:len(started)/2], []byte{3, 0, 0, 0, 0})
		f.Add(op, []byte{0xEE}, []byte{0xff, 0xff, 0xff, 0xff}, []byte{9, 0, 0, 0, 1, 0})
	}
	f.Fuzz(func(t *testing.T, op byte, a, b, c []byte) {
		rpc := &replyClient{replies: [][]byte{a, b, c}}
		cl := NewClient("fuzz", rpc)
		cl.bulk, cl.minor = replyBulk(t, b, c), ProtocolMinor
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
			check("Logs", ct.Logs(ctx, io.Discard, io.Discard, false))
			check("Logs(follow)", ct.Logs(ctx, io.Discard, io.Discard, true))
			st, err = ct.Status(ctx)
			check("Status", err)
			if err == nil && st.IsDone() && (st.ExitCode() < 0 || st.ExitCode() > 255) {
				t.Fatalf("exit code %d accepted after follow", st.ExitCode())
			}
			check("Cleanup", ct.Cleanup(ctx))
		}
		switch op % 8 {
		case 0:
			_, err := cl.Info(ctx)
			check("Info", err)
		case 1:
			od, err := cl.Open(ctx, "ns", OpenOptions{})
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
			ct, err := d.GetContainer(ctx, "t")
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

package wire

import (
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	_ "google.golang.org/grpc/encoding/proto" // registers the codec statusCodec wraps
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/jtarchie/pocketci/orchestra"
	"github.com/jtarchie/pocketci/proto/driverv1"
)

// The host's checks on what crosses: every reply from a plugin before the
// host uses it (a plugin is someone else's binary, and a malformed reply must
// be an error naming the plugin and the call, never a panic or a wrong
// answer), and the size of a task before it is sent.

// invalidReply is the error for a reply that breaks the protocol.
func (c *Client) invalidReply(op, format string, args ...any) error {
	return fmt.Errorf("plugin %s: %s: invalid reply: %s", c.name, op, fmt.Sprintf(format, args...))
}

// checkContainer checks a RunContainer or GetContainer reply.
func (c *Client) checkContainer(op string, resp *driverv1.RunContainerResponse) error {
	switch {
	case resp == nil:
		return c.invalidReply(op, "no reply")
	case resp.GetContainer() == nil:
		return c.invalidReply(op, "no container reference")
	case resp.GetContainer().GetContainer() == 0:
		return c.invalidReply(op, "container handle 0")
	}
	return nil
}

// checkExitCode refuses an exit code outside 0-255: a process exit status
// is one byte, and anything else would read as a wrong success or failure.
func (c *Client) checkExitCode(op string, code int64) error {
	if code < 0 || code > 255 {
		return c.invalidReply(op, "exit code %d is outside 0-255", code)
	}
	return nil
}

// checkVolume checks a CreateVolume reply for a volume called name.
func (c *Client) checkVolume(ref *driverv1.VolumeRef, name string) error {
	switch {
	case ref == nil || ref.GetVolume() == 0:
		return c.invalidReply("CreateVolume", "no volume handle")
	case ref.GetName() != name:
		return c.invalidReply("CreateVolume", "volume %q for a request of %q", ref.GetName(), name)
	}
	return nil
}

// rawVarint finds the varint at path (a field in nested messages) in the
// wire form b. The generated code truncates an int32 field to 32 bits, so
// an exit code of 2^32+3 would read as 3: the raw value is checked instead.
func rawVarint(b []byte, path ...protowire.Number) (uint64, bool) {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return 0, false
		}
		b = b[n:]
		if num == path[0] {
			if len(path) == 1 && typ == protowire.VarintType {
				v, m := protowire.ConsumeVarint(b)
				return v, m >= 0
			}
			if len(path) > 1 && typ == protowire.BytesType {
				v, m := protowire.ConsumeBytes(b)
				if m < 0 {
					return 0, false
				}
				return rawVarint(v, path[1:]...)
			}
		}
		m := protowire.ConsumeFieldValue(num, typ, b)
		if m < 0 {
			return 0, false
		}
		b = b[m:]
	}
	return 0, false
}

// checkRawExitCode refuses a wire form whose exit code at path is outside
// 0-255 before it is truncated.
func checkRawExitCode(b []byte, path ...protowire.Number) error {
	if v, ok := rawVarint(b, path...); ok && v > 255 {
		return fmt.Errorf("exit code %d is outside 0-255", int64(v))
	}
	return nil
}

// statusCodec is gRPC's proto codec, except that a StatusResponse's exit
// code is checked on the wire before the generated code truncates it.
type statusCodec struct{ encoding.CodecV2 }

// statusCallOption makes a Status call decode through statusCodec.
var statusCallOption = grpc.ForceCodecV2(statusCodec{encoding.GetCodecV2(protoCodecName)})

// protoCodecName is the name of gRPC's proto codec, and so also the
// content-subtype ForceCodecV2 sends: the plugin decodes as usual.
const protoCodecName = "proto"

func (c statusCodec) Name() string { return protoCodecName }

func (c statusCodec) Unmarshal(data mem.BufferSlice, v any) error {
	if st, ok := v.(*driverv1.StatusResponse); ok {
		b := data.Materialize()
		if err := checkRawExitCode(b, 2); err != nil {
			return err
		}
		return proto.Unmarshal(b, st)
	}
	return c.CodecV2.Unmarshal(data, v)
}

// Message limits. A plugin accepts a task of up to maxTask on its bulk
// socket. A task over the limit is refused before it is sent, with
// orchestra.ErrInvalidTask naming its largest field and the limit, instead
// of a transport error, which names nothing.
const (
	maxTask      = 64 << 20
	maxTaskSlack = 1 << 20
	// maxBulkRequest bounds the request that opens a bulk connection, and
	// each message of a Run stream: it may carry a task.
	maxBulkRequest = maxTask + maxTaskSlack
)

// checkTaskSize refuses a request over the plugin's limit.
func (c *Client) checkTaskSize(req *driverv1.RunContainerRequest) error {
	size := proto.Size(req)
	if size <= maxTask {
		return nil
	}
	t := req.GetTask()
	fields := map[string]int{"Command": 0, "Env": 0, "Mounts": 0, "ID": len(t.GetId()), "Image": len(t.GetImage()), "User": len(t.GetUser()), "WorkDir": len(t.GetWorkDir())}
	for _, a := range t.GetCommand() {
		fields["Command"] += len(a)
	}
	for k, v := range t.GetEnv() {
		fields["Env"] += len(k) + len(v)
	}
	for _, m := range t.GetMounts() {
		fields["Mounts"] += len(m.GetName()) + len(m.GetPath())
	}
	largest := "Command"
	for name, n := range fields {
		if n > fields[largest] {
			largest = name
		}
	}
	return fmt.Errorf("plugin %s: RunContainer: task %q is %s, over the %s a task may take through this plugin; its largest field is %s (%s): %w",
		c.name, t.GetId(), mib(size), mib(maxTask), largest, mib(fields[largest]), orchestra.ErrInvalidTask)
}

func mib(n int) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

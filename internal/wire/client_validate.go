package wire

import (
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	_ "google.golang.org/grpc/encoding/proto" // registers the codec statusCodec wraps
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/jtarchie/pocketci/proto/driverv1"
)

// Every reply from a plugin is checked before the host uses it: a plugin is
// someone else's binary, and a malformed reply must be an error naming the
// plugin and the call, never a panic or a wrong answer.

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

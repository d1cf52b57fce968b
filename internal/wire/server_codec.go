package wire

import (
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	_ "google.golang.org/grpc/encoding/proto" // registers the codec stdinCodec wraps
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/jtarchie/pocketci/pluginsdk/proto/driverv1"
)

// The plugin's codec: gRPC's proto codec, except that stdin chunks are
// decoded in place and log chunks built in place (server_chunks.go) are
// sent as they are. Its twin on the host side is logCodec (client.go).

// stdinChunk is a StdinChunk that stdinCodec decodes in place: its Data
// aliases a pooled buffer, released with free once the pipe took it, so
// that receiving stdin allocates nothing per chunk. Under any other codec
// (a gRPC server built without ServerCodec) the embedded message is decoded
// the usual way.
type stdinChunk struct {
	*driverv1.StdinChunk
	buf mem.Buffer
}

func newStdinChunk() *stdinChunk { return &stdinChunk{StdinChunk: &driverv1.StdinChunk{}} }

func (c *stdinChunk) free() {
	if c.buf != nil {
		c.buf.Free()
		c.buf = nil
	}
}

// ServerCodec is the gRPC server option Serve uses: gRPC's proto codec,
// except that stdin chunks are decoded without a copy. A program serving
// NewServer on its own gRPC server may add it; without it, stdin works the
// same, with one allocation per chunk.
func ServerCodec() grpc.ServerOption {
	return grpc.ForceServerCodecV2(stdinCodec{encoding.GetCodecV2("proto")})
}

type stdinCodec struct{ encoding.CodecV2 }

// Marshal hands a log chunk's ready wire form to gRPC, which frees it into
// the pool once written; anything else is marshalled by the proto codec.
func (c stdinCodec) Marshal(v any) (mem.BufferSlice, error) {
	m, ok := v.(builtMessage)
	if !ok {
		return c.CodecV2.Marshal(v)
	}
	w := m.built()
	wire := (*w.buf)[:w.end]
	w.taken = true
	return mem.BufferSlice{mem.NewBuffer(&wire, chunkPool)}, nil
}

func (c stdinCodec) Unmarshal(data mem.BufferSlice, v any) error {
	chunk, ok := v.(*stdinChunk)
	if !ok {
		return c.CodecV2.Unmarshal(data, v)
	}
	buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
	if err := decodeStdinChunk(buf.ReadOnlyData(), chunk.StdinChunk); err != nil {
		buf.Free()
		return err
	}
	chunk.buf = buf
	return nil
}

// decodeStdinChunk parses the wire form of StdinChunk into m, with m.Data a
// sub-slice of b. Unknown fields, which a later minor version may add, are
// skipped.
func decodeStdinChunk(b []byte, m *driverv1.StdinChunk) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return fmt.Errorf("stdin chunk: %w", protowire.ParseError(n))
		}
		b = b[n:]
		if typ == protowire.BytesType && (num == 1 || num == 2 || num == 3) {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return fmt.Errorf("stdin chunk field %d: %w", num, protowire.ParseError(n))
			}
			switch num {
			case 1:
				m.Token = string(v)
			case 2:
				m.Data = v
			default:
				m.Error = string(v)
			}
			b = b[n:]
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return fmt.Errorf("stdin chunk field %d: %w", num, protowire.ParseError(n))
		}
		b = b[n:]
	}
	return nil
}

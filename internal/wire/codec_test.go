package wire

import (
	"bytes"
	"strings"
	"testing"

	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/jtarchie/pocketci/proto/driverv1"
)

// TestDecodeStdinChunk: the hand-written decoder reads what the generated
// code writes, skips fields a later minor version may add, and refuses
// broken input.
func TestDecodeStdinChunk(t *testing.T) {
	marshal := func(m *driverv1.StdinChunk) []byte {
		b, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	withUnknown := protowire.AppendVarint(protowire.AppendTag(marshal(&driverv1.StdinChunk{Data: []byte("d")}), 9, protowire.VarintType), 7)
	tests := []struct {
		name    string
		in      []byte
		want    *driverv1.StdinChunk
		wantErr string
	}{
		{"token", marshal(&driverv1.StdinChunk{Token: "tok"}), &driverv1.StdinChunk{Token: "tok"}, ""},
		{"data", marshal(&driverv1.StdinChunk{Data: []byte("abc\x00")}), &driverv1.StdinChunk{Data: []byte("abc\x00")}, ""},
		{"error", marshal(&driverv1.StdinChunk{Error: "boom"}), &driverv1.StdinChunk{Error: "boom"}, ""},
		{"unknown field skipped", withUnknown, &driverv1.StdinChunk{Data: []byte("d")}, ""},
		{"empty", nil, &driverv1.StdinChunk{}, ""},
		{"truncated data", marshal(&driverv1.StdinChunk{Data: []byte("abcdef")})[:4], nil, "stdin chunk field 2"},
		{"bad tag", []byte{0xff}, nil, "stdin chunk"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := &driverv1.StdinChunk{}
			err := decodeStdinChunk(tt.in, got)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want one naming %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got.GetToken() != tt.want.GetToken() || !bytes.Equal(got.GetData(), tt.want.GetData()) || got.GetError() != tt.want.GetError() {
				t.Fatalf("decoded %v, %v; want %v", got, err, tt.want)
			}
		})
	}
}

// TestServerCodecDecodesStdinInPlace: under ServerCodec a stdin chunk's
// data aliases the received buffer, and other messages decode as usual.
func TestServerCodecDecodesStdinInPlace(t *testing.T) {
	codec := stdinCodec{encoding.GetCodecV2("proto")}
	wire, err := proto.Marshal(&driverv1.StdinChunk{Data: []byte("payload")})
	if err != nil {
		t.Fatal(err)
	}
	chunk := newStdinChunk()
	if err := codec.Unmarshal(mem.BufferSlice{mem.SliceBuffer(wire)}, chunk); err != nil {
		t.Fatal(err)
	}
	if string(chunk.GetData()) != "payload" || chunk.buf == nil {
		t.Fatalf("data %q, pooled buffer kept %v", chunk.GetData(), chunk.buf != nil)
	}
	chunk.free()
	req := &driverv1.OpenRequest{}
	raw, _ := proto.Marshal(&driverv1.OpenRequest{Namespace: "ns"})
	if err := codec.Unmarshal(mem.BufferSlice{mem.SliceBuffer(raw)}, req); err != nil || req.GetNamespace() != "ns" {
		t.Fatalf("other message: %v, %v", req, err)
	}
}

// TestBuiltChunksAreValidMessages: a log chunk built in place, for the Logs
// stream and for a Run stream, is what the generated code would have sent.
func TestBuiltChunksAreValidMessages(t *testing.T) {
	codec := stdinCodec{encoding.GetCodecV2("proto")}
	for _, run := range []bool{false, true} {
		for _, size := range []int{0, 1, 127, 128, 32 << 10, chunkSize - framing} {
			w := newWireChunk(driverv1.LogChunk_STREAM_STDERR, size, run)
			data := bytes.Repeat([]byte{'x'}, size)
			if n := w.fill(data); n != size {
				t.Fatalf("fill took %d of %d", n, size)
			}
			out, err := codec.Marshal(w.message())
			if err != nil {
				t.Fatal(err)
			}
			b := out.Materialize()
			out.Free()
			w.release()
			var got *driverv1.LogChunk
			if run {
				ev := &driverv1.RunEvent{}
				if err := proto.Unmarshal(b, ev); err != nil {
					t.Fatalf("run %v size %d: %v", run, size, err)
				}
				got = ev.GetOutput()
			} else {
				got = &driverv1.LogChunk{}
				if err := proto.Unmarshal(b, got); err != nil {
					t.Fatalf("size %d: %v", size, err)
				}
			}
			if got.GetStream() != driverv1.LogChunk_STREAM_STDERR || !bytes.Equal(got.GetData(), data) {
				t.Fatalf("run %v size %d: decoded stream %v, %d bytes", run, size, got.GetStream(), len(got.GetData()))
			}
		}
	}
}

package wire

import (
	"fmt"
	"io"
	"sync"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/jtarchie/pocketci/pluginsdk/proto/driverv1"
)

// chunkSender turns a driver's writes to stdout and stderr into LogChunk
// messages. Without follow it coalesces small writes into chunks of up to
// chunkSize; with follow it sends each write at once so output is live.
//
// It copies writes straight into the wire form of a LogChunk, in a pooled
// buffer that gRPC takes over and returns to the pool once written (see
// wireChunk), so a chunk is copied once on its way to the socket, not twice.
type chunkSender struct {
	mu     sync.Mutex
	stream msgSender
	follow bool
	// run sends RunEvent output events (a Run stream) instead of LogChunks.
	run  bool
	bufs [3]*wireChunk
	err  error
}

// msgSender is the sending half of a gRPC stream.
type msgSender interface{ SendMsg(any) error }

func newChunkSender(stream msgSender, follow bool) *chunkSender {
	return &chunkSender{stream: stream, follow: follow}
}

func (c *chunkSender) writer(stream driverv1.LogChunk_Stream) io.Writer {
	return streamWriter{c, stream}
}

type streamWriter struct {
	c      *chunkSender
	stream driverv1.LogChunk_Stream
}

func (w streamWriter) Write(p []byte) (int, error) {
	w.c.mu.Lock()
	defer w.c.mu.Unlock()
	if w.c.err != nil {
		return 0, w.c.err
	}
	n := len(p)
	for len(p) > 0 {
		buf := w.c.bufs[w.stream]
		if buf == nil {
			size := chunkSize - runPrefix - wireHeader - wireFooter
			if w.c.follow {
				// Sent at once: a buffer the size of the write will do.
				size = min(len(p), size)
			}
			buf = newWireChunk(w.stream, size, w.c.run)
			w.c.bufs[w.stream] = buf
		}
		p = p[buf.fill(p):]
		if buf.full() || w.c.follow {
			if err := w.c.sendLocked(w.stream); err != nil {
				return 0, err
			}
		}
	}
	return n, nil
}

// sendLocked sends what is buffered for stream.
func (c *chunkSender) sendLocked(stream driverv1.LogChunk_Stream) error {
	buf := c.bufs[stream]
	if buf == nil || buf.empty() {
		return nil
	}
	c.bufs[stream] = nil
	err := c.stream.SendMsg(buf.message())
	buf.release()
	if err != nil {
		c.err = fmt.Errorf("send logs to host: %w", err)
		return c.err
	}
	return nil
}

func (c *chunkSender) flush() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		for i, buf := range c.bufs {
			if buf != nil {
				buf.release()
				c.bufs[i] = nil
			}
		}
		return c.err
	}
	for _, s := range []driverv1.LogChunk_Stream{driverv1.LogChunk_STREAM_STDOUT, driverv1.LogChunk_STREAM_STDERR} {
		if err := c.sendLocked(s); err != nil {
			return err
		}
	}
	return nil
}

// wireChunk is a LogChunk being built in its wire form: the data field's
// tag, its length as a varint padded to lenBytes (a valid, non-minimal
// varint, so the header is written before the length is known), the data,
// then the stream field.
//
// A chunk for a Run stream is the output field of a RunEvent: the same
// LogChunk after runPrefix bytes that hold the field's tag and padded length.
type wireChunk struct {
	buf    *[]byte
	n      int // data bytes
	size   int // room for data
	prefix int // runPrefix for a RunEvent, else 0
	stream driverv1.LogChunk_Stream
	// end is where the wire form ends, once message built it.
	end int
	// taken is set when the codec handed buf to gRPC, which frees it.
	taken bool
}

const (
	lenBytes   = 4 // a varint of 4 bytes holds up to 2^28-1, far above chunkSize
	wireHeader = 1 + lenBytes
	wireFooter = 2 // the stream field: tag and a one-byte varint
	runPrefix  = 1 + lenBytes
	// framing is the most a chunk adds to its data.
	framing = runPrefix + wireHeader + wireFooter
)

// chunkPool holds the buffers log chunks are built in. Its sizes are the
// sizes drivers write in (io.Copy's 32 KiB and other powers of two) plus a
// chunk's framing, and a full chunk: gRPC's default pool rounds 32 KiB and 7
// bytes up to 1 MiB, so 200 tasks followed at once held 750 MiB in the
// plugin, most of it empty.
var chunkPool = mem.NewTieredBufferPool(
	256,
	4<<10+framing,
	16<<10+framing,
	32<<10+framing,
	64<<10+framing,
	256<<10+framing,
	chunkSize,
)

// newWireChunk returns a chunk with room for size bytes of data, for a Run
// stream when run is set.
func newWireChunk(stream driverv1.LogChunk_Stream, size int, run bool) *wireChunk {
	w := &wireChunk{size: size, stream: stream}
	if run {
		w.prefix = runPrefix
	}
	w.buf = chunkPool.Get(w.prefix + wireHeader + size + wireFooter)
	return w
}

func (w *wireChunk) fill(p []byte) int {
	start := w.prefix + wireHeader
	k := copy((*w.buf)[start+w.n:start+w.size], p)
	w.n += k
	return k
}

func (w *wireChunk) full() bool  { return w.n == w.size }
func (w *wireChunk) empty() bool { return w.n == 0 }

// message returns what to send: a *wireLogChunk (or, for a Run stream, a
// *wireRunEvent), which ServerCodec sends as is and any other codec
// marshals from its message.
func (w *wireChunk) message() any {
	b := *w.buf
	p := w.prefix
	putField(b[p:], 2, w.n)
	end := p + wireHeader + w.n
	b[end] = byte(protowire.EncodeTag(1, protowire.VarintType))
	b[end+1] = byte(w.stream)
	w.end = end + wireFooter
	chunk := &driverv1.LogChunk{Stream: w.stream, Data: b[p+wireHeader : end]}
	if p == 0 {
		return &wireLogChunk{LogChunk: chunk, chunk: w}
	}
	putField(b, 2, w.end-runPrefix)
	return &wireRunEvent{RunEvent: &driverv1.RunEvent{Kind: &driverv1.RunEvent_Output{Output: chunk}}, chunk: w}
}

// putField writes the tag of bytes field num and the length n as a varint
// padded to lenBytes.
func putField(b []byte, num protowire.Number, n int) {
	b[0] = byte(protowire.EncodeTag(num, protowire.BytesType))
	v := uint64(n)
	for i := 1; i < lenBytes; i++ {
		b[i] = byte(v&0x7f) | 0x80
		v >>= 7
	}
	b[lenBytes] = byte(v)
}

// release returns the buffer to the pool unless gRPC took it.
func (w *wireChunk) release() {
	if !w.taken {
		chunkPool.Put(w.buf)
	}
	w.buf = nil
}

// wireLogChunk is a LogChunk whose wire form is already built.
type wireLogChunk struct {
	*driverv1.LogChunk
	chunk *wireChunk
}

// wireRunEvent is a RunEvent with output whose wire form is already built.
type wireRunEvent struct {
	*driverv1.RunEvent
	chunk *wireChunk
}

func (m *wireLogChunk) built() *wireChunk { return m.chunk }
func (m *wireRunEvent) built() *wireChunk { return m.chunk }

// builtMessage is a message whose wire form is built (see wireChunk).
type builtMessage interface{ built() *wireChunk }

// Package bulk is the framing of the plugin protocol's bulk socket
// (docs/protocol.md), used by both halves of internal/wire. A connection
// opens with a length-prefixed message; bytes then travel as frames, in both
// directions: a type byte, a 4-byte big-endian length, the payload. An end
// frame carries a marshalled google.rpc.Status: code 0 is a clean end.
package bulk

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"

	"google.golang.org/genproto/googleapis/rpc/status"
	grpcstatus "google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// Frame types.
const (
	Data   byte = 1 // stdout, or the connection's one stream
	Stderr byte = 2
	End    byte = 3 // a google.rpc.Status
	Exit   byte = 4 // a followed command's exit code, before the end
)

// MaxFrame bounds every frame's payload.
const MaxFrame = 1 << 20

const header = 5

// ErrNoEnd is a stream that stopped without its end frame: never a clean
// end, whatever the transport said.
var ErrNoEnd = errors.New("the connection ended before the stream's end frame")

// WriteLength writes head as 4 big-endian bytes, then p, in one write.
func WriteLength(w io.Writer, head uint32, p []byte) error {
	var n [4]byte
	binary.BigEndian.PutUint32(n[:], head)
	_, err := (&net.Buffers{n[:], p}).WriteTo(w)
	return err
}

// WriteMessage writes m after its 4-byte big-endian length, in one write.
func WriteMessage(w io.Writer, m proto.Message) error {
	data, err := proto.Marshal(m)
	if err != nil {
		return fmt.Errorf("marshal %T: %w", m, err)
	}
	return WriteLength(w, uint32(len(data)), data)
}

// ReadMessage reads a message written by WriteMessage, of at most limit
// bytes, into m.
func ReadMessage(r io.Reader, m proto.Message, limit int) error {
	var n [4]byte
	if _, err := io.ReadFull(r, n[:]); err != nil {
		return err
	}
	size := binary.BigEndian.Uint32(n[:])
	if size > uint32(limit) {
		return fmt.Errorf("a message of %d bytes is over the %d limit", size, limit)
	}
	data := make([]byte, size)
	if _, err := io.ReadFull(r, data); err != nil {
		return err
	}
	if err := proto.Unmarshal(data, m); err != nil {
		return fmt.Errorf("unmarshal %T: %w", m, err)
	}
	return nil
}

// WriteFrame writes one frame, unbuffered, in one write.
func WriteFrame(w io.Writer, kind byte, payload []byte) error {
	h := [header]byte{kind}
	binary.BigEndian.PutUint32(h[1:], uint32(len(payload)))
	_, err := (&net.Buffers{h[:], payload}).WriteTo(w)
	return err
}

// Writer writes frames to one connection, from any goroutine. A live writer
// flushes every write, so that followed output reaches the peer at once.
type Writer struct {
	mu   sync.Mutex
	w    *bufio.Writer
	live bool
	err  error
}

// NewWriter returns a Writer on w.
func NewWriter(w io.Writer, live bool) *Writer {
	return &Writer{w: bufio.NewWriterSize(w, 64<<10), live: live}
}

// Stream is an io.Writer whose writes become frames of kind, at most
// MaxFrame each.
func (f *Writer) Stream(kind byte) io.Writer { return stream{f, kind} }

type stream struct {
	f    *Writer
	kind byte
}

func (s stream) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		k := min(len(p), MaxFrame)
		if err := s.f.Frame(s.kind, p[:k]); err != nil {
			return 0, err
		}
		p = p[k:]
	}
	if s.f.live {
		if err := s.f.flush(); err != nil {
			return 0, err
		}
	}
	return n, nil
}

// Frame writes one frame; after a failed write, every call fails.
func (f *Writer) Frame(kind byte, payload []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err == nil {
		f.err = WriteFrame(f.w, kind, payload)
	}
	return f.err
}

// Exit writes an exit frame: code as a 4-byte big-endian int32.
func (f *Writer) Exit(code int) error {
	return f.Frame(Exit, binary.BigEndian.AppendUint32(nil, uint32(int32(code))))
}

// End writes the end frame, which carries st (a gRPC status error; nil is a
// clean end), and flushes.
func (f *Writer) End(st error) error {
	if err := f.Frame(End, StatusBytes(st)); err != nil {
		return err
	}
	return f.flush()
}

func (f *Writer) flush() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err == nil {
		f.err = f.w.Flush()
	}
	return f.err
}

// ExitCode reads an exit frame's payload; false when it is not 4 bytes.
func ExitCode(p []byte) (int64, bool) {
	if len(p) != 4 {
		return 0, false
	}
	return int64(int32(binary.BigEndian.Uint32(p))), true
}

// readHeader reads a frame's type and length, refusing a frame over
// MaxFrame.
func readHeader(r *bufio.Reader) (kind byte, size int, err error) {
	var h [header]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, 0, noEnd(err)
	}
	n := binary.BigEndian.Uint32(h[1:])
	if n > MaxFrame {
		return 0, 0, fmt.Errorf("a frame of %d bytes is over the %d limit", n, MaxFrame)
	}
	return h[0], int(n), nil
}

// readFrame reads one frame into *buf, which it grows as needed.
func readFrame(r *bufio.Reader, buf *[]byte) (kind byte, payload []byte, err error) {
	kind, size, err := readHeader(r)
	if err != nil {
		return 0, nil, err
	}
	if cap(*buf) < size {
		*buf = make([]byte, size)
	}
	payload = (*buf)[:size]
	if _, err := io.ReadFull(r, payload); err != nil {
		return 0, nil, noEnd(err)
	}
	return kind, payload, nil
}

// ReadFrames hands data, stderr and exit frames from r to each, until the
// end frame, whose status it returns as the stream's outcome (nil for a
// clean end). A transport error, a frame over MaxFrame, an unknown type or
// a missing end is err. A payload is only valid during the call to each.
func ReadFrames(r io.Reader, each func(kind byte, payload []byte) error) (outcome, err error) {
	br := bufio.NewReaderSize(r, 64<<10)
	buf := make([]byte, 0, 32<<10)
	for {
		kind, payload, err := readFrame(br, &buf)
		switch {
		case err != nil:
			return nil, err
		case kind == End:
			return StatusError(payload)
		case kind != Data && kind != Stderr && kind != Exit:
			return nil, fmt.Errorf("unknown frame type %d", kind)
		}
		if err := each(kind, payload); err != nil {
			return nil, err
		}
	}
}

func noEnd(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return ErrNoEnd
	}
	return err
}

// StatusBytes is st, a gRPC status error, as a marshalled google.rpc.Status
// (code 0 for nil).
func StatusBytes(st error) []byte {
	b, err := proto.Marshal(grpcstatus.Convert(st).Proto())
	if err != nil {
		return nil
	}
	return b
}

// StatusError reads a marshalled google.rpc.Status: the error it carries,
// nil for code 0; err when the bytes are not a status.
func StatusError(b []byte) (outcome, err error) {
	st := &status.Status{}
	if err := proto.Unmarshal(b, st); err != nil {
		return nil, fmt.Errorf("bad status: %w", err)
	}
	return grpcstatus.ErrorProto(st), nil
}

// Reader reads the data frames of a connection as one stream: Read returns
// their bytes, then io.EOF at a clean end frame, or the error the end frame,
// the transport or a bad frame gave (never io.EOF for a stream cut short).
// It is how a tar archive travels. A data frame's bytes are handed on as
// they arrive, not once the whole frame is in: the sender and whoever reads
// (an extractor writing files) work at the same time.
type Reader struct {
	r    *bufio.Reader
	left int   // bytes of the current data frame not yet read
	err  error // sticky: the stream's end
}

// NewReader returns a Reader on r.
func NewReader(r io.Reader) *Reader { return &Reader{r: bufio.NewReaderSize(r, 64<<10)} }

func (f *Reader) Read(p []byte) (int, error) {
	if err := f.Peek(); err != nil {
		return 0, err
	}
	n, err := f.r.Read(p[:min(len(p), f.left)])
	f.left -= n
	if err != nil && f.left > 0 {
		f.err = noEnd(err)
	}
	return n, nil
}

// Peek reads up to the stream's next byte: nil when there is one, else how
// the stream ended.
func (f *Reader) Peek() error {
	for f.left == 0 && f.err == nil {
		f.next()
	}
	if f.left > 0 {
		return nil
	}
	return f.err
}

// next reads a frame header, and an end frame whole.
func (f *Reader) next() {
	kind, size, err := readHeader(f.r)
	switch {
	case err != nil:
		f.err = err
	case kind == Data:
		f.left = size
	case kind == End:
		payload := make([]byte, size)
		if _, err := io.ReadFull(f.r, payload); err != nil {
			f.err = noEnd(err)
			return
		}
		f.err = endOf(payload)
	default:
		f.err = fmt.Errorf("unexpected frame type %d in a data stream", kind)
	}
}

// endOf is an end frame's status as a Reader ends: io.EOF for a clean end.
func endOf(payload []byte) error {
	outcome, err := StatusError(payload)
	switch {
	case err != nil:
		return err
	case outcome != nil:
		return outcome
	}
	return io.EOF
}

// SocketBuffer is the send buffer asked for on each end of a bulk
// connection. Linux's default (about 208 KiB) makes a sender and a reader in
// two processes take turns every few hundred KiB; a larger buffer lets both
// run. The kernel caps it at net.core.wmem_max.
const SocketBuffer = 4 << 20

// Tune gives conn the larger send buffer, when it is a unix socket; it is
// only an optimisation, so an error is ignored.
func Tune(conn net.Conn) {
	if uc, ok := conn.(*net.UnixConn); ok {
		_ = uc.SetWriteBuffer(SocketBuffer)
	}
}

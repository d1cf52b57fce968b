package wire

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

// The bulk socket carries every byte of a task (stdin, logs) and its Run
// stream beside gRPC, on a unix socket in the same private directory: a gRPC
// stream tops out at a fraction of what the socket moves. A connection
// opens with a BulkRequest; bytes then travel in one framing, used in both
// directions (see BulkRequest in the proto): a type byte, a 4-byte
// big-endian length, the payload.

// Frame types.
const (
	frameData   byte = 1 // stdout, or the connection's one stream
	frameStderr byte = 2
	frameEnd    byte = 3 // a google.rpc.Status: code 0 is a clean end
	frameExit   byte = 4 // a followed container's exit code, before the end
)

// frameHeader is a frame's type and length.
const frameHeader = 5

// maxBulkRequest bounds the request that opens a bulk connection, and each
// message of a Run stream: it may carry a task.
const maxBulkRequest = maxTask + maxTaskSlack

// writeMessage writes m after its 4-byte big-endian length, in one write.
func writeMessage(w io.Writer, m proto.Message) error {
	data, err := proto.Marshal(m)
	if err != nil {
		return fmt.Errorf("marshal %T: %w", m, err)
	}
	var n [4]byte
	binary.BigEndian.PutUint32(n[:], uint32(len(data)))
	_, err = (&net.Buffers{n[:], data}).WriteTo(w)
	return err
}

// readMessage reads a message written by writeMessage, of at most limit
// bytes, into m.
func readMessage(r io.Reader, m proto.Message, limit int) error {
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

// frameWriter writes frames to one connection, from any goroutine. live
// flushes every write, so that followed output reaches the host at once.
type frameWriter struct {
	mu   sync.Mutex
	w    *bufio.Writer
	live bool
	err  error
}

func newFrameWriter(w io.Writer, live bool) *frameWriter {
	return &frameWriter{w: bufio.NewWriterSize(w, 64<<10), live: live}
}

// stream is an io.Writer whose writes become frames of kind, at most
// chunkSize each.
func (f *frameWriter) stream(kind byte) io.Writer { return frameStream{f, kind} }

type frameStream struct {
	f    *frameWriter
	kind byte
}

func (s frameStream) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		k := min(len(p), chunkSize)
		if err := s.f.frame(s.kind, p[:k]); err != nil {
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

func (f *frameWriter) frame(kind byte, payload []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return f.err
	}
	var h [frameHeader]byte
	h[0] = kind
	binary.BigEndian.PutUint32(h[1:], uint32(len(payload)))
	if _, err := f.w.Write(h[:]); err != nil {
		f.err = err
		return err
	}
	if _, err := f.w.Write(payload); err != nil {
		f.err = err
	}
	return f.err
}

// end writes the end frame, which says how the stream ended (nil: cleanly),
// and flushes.
func (f *frameWriter) end(err error) error {
	if ferr := f.frame(frameEnd, statusBytes(err)); ferr != nil {
		return ferr
	}
	return f.flush()
}

func (f *frameWriter) flush() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err == nil {
		f.err = f.w.Flush()
	}
	return f.err
}

// errNoEnd is a stream that stopped without its end frame: never a clean
// end, whatever the transport said.
var errNoEnd = errors.New("the connection ended before the stream's end frame")

// readFrames reads frames from r and hands data frames (types 1 and 2) and
// exit frames (4) to each, until the end frame, whose status it returns as
// the stream's outcome (nil for a clean end). A transport error, a frame over
// chunkSize, an unknown type or a missing end is err. A payload is only valid
// during the call to each.
func readFrames(r io.Reader, each func(kind byte, payload []byte) error) (outcome, err error) {
	br := bufio.NewReaderSize(r, 64<<10)
	buf := make([]byte, 0, 32<<10)
	var h [frameHeader]byte
	for {
		if _, err := io.ReadFull(br, h[:]); err != nil {
			return nil, noEnd(err)
		}
		size := binary.BigEndian.Uint32(h[1:])
		if size > chunkSize {
			return nil, fmt.Errorf("a frame of %d bytes is over the %d limit", size, chunkSize)
		}
		if cap(buf) < int(size) {
			buf = make([]byte, size)
		}
		payload := buf[:size]
		if _, err := io.ReadFull(br, payload); err != nil {
			return nil, noEnd(err)
		}
		switch h[0] {
		case frameData, frameStderr, frameExit:
			if err := each(h[0], payload); err != nil {
				return nil, err
			}
		case frameEnd:
			return statusError(payload)
		default:
			return nil, fmt.Errorf("unknown frame type %d", h[0])
		}
	}
}

func noEnd(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return errNoEnd
	}
	return err
}

// statusBytes is err as a marshalled google.rpc.Status, code 0 for nil.
func statusBytes(err error) []byte {
	b, merr := proto.Marshal(grpcstatus.Convert(toStatus(err)).Proto())
	if merr != nil {
		return nil
	}
	return b
}

// statusError reads a marshalled google.rpc.Status: the error it carries,
// nil for code 0; err when the bytes are not a status.
func statusError(b []byte) (outcome, err error) {
	st := &status.Status{}
	if err := proto.Unmarshal(b, st); err != nil {
		return nil, fmt.Errorf("bad status: %w", err)
	}
	return grpcstatus.ErrorProto(st), nil
}

// frameReader reads the data frames of a connection as one stream: Read
// returns their bytes, then io.EOF at a clean end frame, or the error the
// end frame, the transport or a bad frame gave (never io.EOF for a stream
// cut short). It is how a tar archive travels.
type frameReader struct {
	r    *bufio.Reader
	left int   // bytes of the current data frame not yet read
	err  error // sticky: the stream's end
}

func newFrameReader(r io.Reader) *frameReader {
	return &frameReader{r: bufio.NewReaderSize(r, 64<<10)}
}

func (f *frameReader) Read(p []byte) (int, error) {
	for f.left == 0 {
		if f.err != nil {
			return 0, f.err
		}
		f.next()
	}
	n, err := f.r.Read(p[:min(len(p), f.left)])
	f.left -= n
	if err != nil && f.left > 0 {
		f.err = noEnd(err)
	}
	return n, nil
}

// next reads a frame header, and an end frame whole.
func (f *frameReader) next() {
	var h [frameHeader]byte
	if _, err := io.ReadFull(f.r, h[:]); err != nil {
		f.err = noEnd(err)
		return
	}
	size := int(binary.BigEndian.Uint32(h[1:]))
	switch {
	case size > chunkSize:
		f.err = fmt.Errorf("a frame of %d bytes is over the %d limit", size, chunkSize)
	case h[0] == frameData:
		f.left = size
	case h[0] == frameEnd:
		payload := make([]byte, size)
		if _, err := io.ReadFull(f.r, payload); err != nil {
			f.err = noEnd(err)
			return
		}
		outcome, err := statusError(payload)
		switch {
		case err != nil:
			f.err = err
		case outcome != nil:
			f.err = outcome
		default:
			f.err = io.EOF
		}
	default:
		f.err = fmt.Errorf("unexpected frame type %d in a data stream", h[0])
	}
}

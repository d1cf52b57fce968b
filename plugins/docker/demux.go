package docker

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/docker/docker/api/types/versions"
)

// The engine sends a container's log as frames: an 8-byte header (the
// stream: 1 stdout, 2 stderr, 3 an engine error; then the payload's size,
// big-endian, in bytes 4-7) and the payload. Each frame is one message of
// the log driver.
const (
	frameHeaderLen = 8
	streamStdout   = 1
	streamStderr   = 2
	streamSysErr   = 3
)

// splitSize is the engine's line buffer (daemon/logger's copier): a line
// longer than this is logged as pieces of exactly splitSize bytes (without
// a newline) and a last piece.
const splitSize = 16 << 10

// maxAnalysedFrame bounds the frame demux holds whole to look at its last
// byte; a log message is at most splitSize+1 bytes, bigger frames are
// passed on in pieces.
const maxAnalysedFrame = 64 << 10

// loseSplitNewline reports whether an engine of this API version drops the
// newline of a split line: its local log driver appends the newline only
// to messages that are not pieces, and the last piece of a split line is
// one (fixed in moby commit 990b0e28ba, engine 22.06/23.0, API 1.42). An
// engine that reports no version is taken as old.
func loseSplitNewline(engineAPIVersion string) bool {
	return engineAPIVersion == "" || versions.LessThan(engineAPIVersion, "1.42")
}

// demux writes the payloads of the engine's log frames to stdout and
// stderr. With repair it puts back the newline an old engine dropped from
// every line longer than splitSize.
//
// Each message of the local log driver is one frame and holds at most one
// newline, at its end: a whole line (with its newline), a piece of exactly
// splitSize bytes, the last piece of a split line (its newline dropped;
// an empty last piece is not sent at all), or what the command wrote last
// without a newline (only at the end of its stream). So, per stream, after
// a splitSize piece:
//   - a frame ending in a newline is a whole line, and the split line
//     before it was a multiple of splitSize long: its empty last piece was
//     not sent, and a newline goes before this frame;
//   - a shorter frame without a newline is the last piece, or the
//     command's final bytes without a newline. When more frames follow on
//     its stream, it was the last piece: the newline is written before the
//     next frame.
//
// When a finished task's stream ends in a split line, the engine kept
// nothing that tells a line that ended in a newline from final bytes
// without one; the complete read of a finished task (final) takes it for a
// line and writes the newline (the common case: a long line printed with
// its newline as the last output). Before that, a newline is only written
// once the next frame of its stream decides it, so what a read of a
// running task or a followed read writes is always a prefix of what the
// final read writes.
type demux struct {
	out    [3]io.Writer // by stream: [1] stdout, [2] stderr
	repair bool
	state  [3]splitState
	buf    []byte
}

// splitState is what demux knows of a stream's split line.
type splitState struct {
	inSplit bool // the last frame was a splitSize piece
	owed    bool // the last frame was a split line's last piece: a newline is owed before any next frame
}

func newDemux(stdout, stderr io.Writer, repair bool) *demux {
	return &demux{out: [3]io.Writer{nil, stdout, stderr}, repair: repair}
}

// copy demultiplexes r until it ends. final says that r is the complete
// log of a finished task: a stream that ends in a split line gets its
// newline.
func (d *demux) copy(r io.Reader, final bool) error {
	br := bufio.NewReaderSize(r, 32<<10)
	var hdr [frameHeaderLen]byte
	for {
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			return fmt.Errorf("reading a log frame header: %w", err)
		}
		size := int64(binary.BigEndian.Uint32(hdr[4:]))
		switch stream := hdr[0]; stream {
		case streamStdout, streamStderr:
			if err := d.frame(br, int(stream), size); err != nil {
				return err
			}
		case streamSysErr:
			msg, err := io.ReadAll(io.LimitReader(br, min(size, 4096)))
			if err != nil {
				return fmt.Errorf("reading the engine's error: %w", err)
			}
			return fmt.Errorf("the engine reported an error in the log stream: %s", msg)
		default:
			return fmt.Errorf("log frame of unknown stream %d", stream)
		}
	}
	if final {
		return d.finish()
	}
	return nil
}

// frame writes one frame's payload of size bytes, read from r, to stream.
func (d *demux) frame(r io.Reader, stream int, size int64) error {
	w := d.out[stream]
	if !d.repair || size > maxAnalysedFrame {
		d.state[stream] = splitState{}
		if _, err := io.CopyN(w, r, size); err != nil {
			return frameError(err)
		}
		return nil
	}
	if int64(cap(d.buf)) < size {
		d.buf = make([]byte, size)
	}
	p := d.buf[:size]
	if _, err := io.ReadFull(r, p); err != nil {
		return frameError(err)
	}
	st := &d.state[stream]
	wholeLine := len(p) > 0 && p[len(p)-1] == '\n'
	if st.owed || (st.inSplit && (wholeLine || len(p) == 0)) {
		if _, err := w.Write([]byte{'\n'}); err != nil {
			return err
		}
		*st = splitState{}
	}
	if _, err := w.Write(p); err != nil {
		return err
	}
	switch {
	case wholeLine || len(p) == 0:
		*st = splitState{}
	case len(p) == splitSize:
		st.inSplit = true
	case st.inSplit:
		*st = splitState{owed: true}
	}
	return nil
}

// finish writes the newline of each stream that ends in a split line.
func (d *demux) finish() error {
	for stream := streamStdout; stream <= streamStderr; stream++ {
		if st := d.state[stream]; st.owed || st.inSplit {
			if _, err := d.out[stream].Write([]byte{'\n'}); err != nil {
				return err
			}
		}
		d.state[stream] = splitState{}
	}
	return nil
}

// frameError turns a payload read error into one that says so; a stream
// cut inside a frame is io.ErrUnexpectedEOF.
func frameError(err error) error {
	if errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("reading a log frame: %w", err)
}

package wire

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"

	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/jtarchie/pocketci/pluginsdk/proto/driverv1"
)

// listenBulk opens the bulk socket in dir, which must be private to the
// host's user (go-plugin's socket directory), and serves it until l closes.
func (s *server) listenBulk(dir string) (net.Listener, error) {
	addr := filepath.Join(dir, fmt.Sprintf("bulk-%d.sock", os.Getpid()))
	l, err := net.Listen("unix", addr)
	if err != nil {
		return nil, fmt.Errorf("bulk socket: %w", err)
	}
	s.bulkAddr = addr
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			go s.serveBulk(conn)
		}
	}()
	return l, nil
}

func (s *server) serveBulk(conn net.Conn) {
	defer conn.Close()
	// A driver panic on this goroutine must not kill the plugin; the host
	// sees the connection end without its end frame.
	defer func() {
		if p := recover(); p != nil {
			_ = panicError(s.logger, "bulk", p)
		}
	}()
	req, err := readBulkRequest(conn)
	if err != nil {
		s.logger.Warn("bad bulk connection", "err", err)
		return
	}
	switch kind := req.GetKind().(type) {
	case *driverv1.BulkRequest_StdinToken:
		s.bulkStdin(conn, kind.StdinToken, false)
	case *driverv1.BulkRequest_StdinFramedToken:
		s.bulkStdin(conn, kind.StdinFramedToken, true)
	case *driverv1.BulkRequest_Logs:
		s.bulkLogs(conn, kind.Logs)
	case *driverv1.BulkRequest_Run:
		s.serveRunBulk(conn, kind.Run)
	default:
		s.logger.Warn("bulk connection asks for nothing known")
	}
}

// bulkStdin copies the connection into the task's stdin pipe: raw bytes up
// to a half-close (1.2), or frames (1.3, see BulkRequest), whose end says
// whether the input ended cleanly or with the caller's read error.
func (s *server) bulkStdin(conn net.Conn, token string, framed bool) {
	if token == "" {
		return
	}
	pipe := s.stdins.attach(token)
	defer s.stdins.drop(pipe)
	if framed {
		pipe.end(readStdinFrames(bufio.NewReaderSize(conn, 64<<10), pipe))
		return
	}
	buf := make([]byte, 256<<10)
	for {
		n, rerr := conn.Read(buf)
		if n > 0 {
			if pipe.feed(buf[:n]) != nil {
				return
			}
		}
		if errors.Is(rerr, io.EOF) {
			pipe.end(nil)
			return
		}
		if rerr != nil {
			pipe.end(fmt.Errorf("stdin from host: %w", rerr))
			return
		}
	}
}

// stdinErrorBit marks a stdin frame that carries the caller's read error.
const stdinErrorBit = 1 << 31

// readStdinFrames feeds the frames of r to pipe and returns how the input
// ended: nil at its end frame, else the error.
func readStdinFrames(r io.Reader, pipe *stdinPipe) error {
	buf := make([]byte, chunkSize)
	for {
		var h [4]byte
		if _, err := io.ReadFull(r, h[:]); err != nil {
			return fmt.Errorf("stdin from host: the connection ended before the end of the input: %w", err)
		}
		n := binary.BigEndian.Uint32(h[:])
		if n == 0 {
			return nil
		}
		isErr := n&stdinErrorBit != 0
		n &^= stdinErrorBit
		if n > chunkSize {
			return fmt.Errorf("stdin from host: a frame of %d bytes is over the %d limit", n, chunkSize)
		}
		if _, err := io.ReadFull(r, buf[:n]); err != nil {
			return fmt.Errorf("stdin from host: the connection ended inside a frame: %w", err)
		}
		if isErr {
			return fmt.Errorf("stdin from host: %s", buf[:n])
		}
		if pipe.feed(buf[:n]) != nil {
			return errStdinGone
		}
	}
}

// bulkLogs writes the container's output as frames, then the end frame. The
// host cancels by closing the connection.
func (s *server) bulkLogs(conn net.Conn, req *driverv1.LogsRequest) {
	// The caller's deadline comes in the request (1.3); its cancellation
	// comes as the host hanging up.
	ctx, cancel := withDeadline(context.Background(), req.GetDeadlineUnixNano())
	defer cancel()
	go func() {
		var b [1]byte
		conn.Read(b[:]) // the host sends nothing more: a read ends when it hangs up
		cancel()
	}()
	fw := &frameWriter{w: bufio.NewWriterSize(conn, 32<<10), follow: req.GetFollow()}
	c, err := s.logs(ctx, req, fw.stream(frameStdout), fw.stream(frameStderr))
	if err == nil && req.GetFollow() {
		if code, ok := c.finalStatus(ctx); ok {
			fw.frame(frameExit, binary.BigEndian.AppendUint32(nil, uint32(int32(code))))
		}
	}
	end, merr := proto.Marshal(status.Convert(toStatus(err)).Proto())
	if merr != nil {
		end = nil
	}
	fw.frame(frameEnd, end)
	fw.flush()
}

// frameWriter turns writes to stdout and stderr into frames. With follow it
// flushes each write, so output is live.
type frameWriter struct {
	mu     sync.Mutex
	w      *bufio.Writer
	follow bool
	err    error
}

func (f *frameWriter) stream(kind byte) io.Writer {
	return frameStream{f, kind}
}

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
	if s.f.follow {
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
		f.err = fmt.Errorf("send logs to host: %w", err)
		return f.err
	}
	if _, err := f.w.Write(payload); err != nil {
		f.err = fmt.Errorf("send logs to host: %w", err)
	}
	return f.err
}

func (f *frameWriter) flush() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err == nil {
		if err := f.w.Flush(); err != nil {
			f.err = fmt.Errorf("send logs to host: %w", err)
		}
	}
	return f.err
}

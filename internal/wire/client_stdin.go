package wire

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"

	"github.com/jtarchie/pocketci/pluginsdk/proto/driverv1"
)

// The host's half of a task's stdin (its twin is server_stdin.go): a stream
// that opens before the task starts, copies the caller's reader to the
// plugin with back-pressure from the task's pipe, and ends the way the
// reader ended: at its end, or with its error.

// stdinSink is one open stdin stream.
type stdinSink interface {
	// write sends p; an error means the task no longer reads.
	write(p []byte) error
	// end ends the input: cleanly for nil, else with the caller's error.
	end(readErr error)
	// chunk is the largest write worth making.
	chunk() int
}

// openStdin opens the stdin stream for token: on the bulk socket when there
// is one (framed with a 1.3 plugin, raw with a 1.2 one), else on gRPC. A bulk
// socket that cannot be reached falls back to gRPC; the error says neither
// could open.
func (d *clientDriver) openStdin(ctx context.Context, token string) (stdinSink, error) {
	if d.client.bulk != "" {
		req := &driverv1.BulkRequest{Kind: &driverv1.BulkRequest_StdinToken{StdinToken: token}}
		if d.client.run {
			req.Kind = &driverv1.BulkRequest_StdinFramedToken{StdinFramedToken: token}
		}
		conn, _, err := d.client.dialBulk(ctx, req)
		if err == nil {
			return &bulkStdinSink{conn: conn, framed: d.client.run}, nil
		}
	}
	stream, err := d.client.rpc.WriteStdin(ctx)
	if err != nil {
		return nil, fromStatus(d.client.name, "WriteStdin", err)
	}
	if err := stream.Send(&driverv1.StdinChunk{Token: token}); err != nil {
		_, err = stream.CloseAndRecv()
		return nil, fromStatus(d.client.name, "WriteStdin", err)
	}
	return &grpcStdinSink{stream: stream}, nil
}

// copyStdin copies r to sink, then ends it as r ended.
func copyStdin(sink stdinSink, r io.Reader) {
	buf := make([]byte, sink.chunk())
	for {
		n, rerr := r.Read(buf)
		if n > 0 {
			if err := sink.write(buf[:n]); err != nil {
				sink.end(errStdinGone)
				return
			}
		}
		if errors.Is(rerr, io.EOF) {
			sink.end(nil)
			return
		}
		if rerr != nil {
			sink.end(rerr)
			return
		}
	}
}

type grpcStdinSink struct {
	stream driverv1.Driver_WriteStdinClient
}

func (g *grpcStdinSink) chunk() int { return chunkSize - 64 }

func (g *grpcStdinSink) write(p []byte) error {
	// Send marshals before it returns, so p may be reused.
	return g.stream.Send(&driverv1.StdinChunk{Data: p})
}

func (g *grpcStdinSink) end(readErr error) {
	if readErr != nil && !errors.Is(readErr, errStdinGone) {
		_ = g.stream.Send(&driverv1.StdinChunk{Error: readErr.Error()})
	}
	_, _ = g.stream.CloseAndRecv()
}

type bulkStdinSink struct {
	conn   net.Conn
	framed bool
}

func (b *bulkStdinSink) chunk() int { return 256 << 10 }

func (b *bulkStdinSink) write(p []byte) error {
	if b.framed {
		return writeFrame(b.conn, p)
	}
	_, err := b.conn.Write(p)
	return err
}

func (b *bulkStdinSink) end(readErr error) {
	defer b.conn.Close()
	switch {
	case errors.Is(readErr, errStdinGone):
		return
	case readErr != nil:
		if !b.framed {
			// A 1.2 plugin cannot tell an error from the end: hang up
			// without the half-close it waits for.
			return
		}
		msg := []byte(fmt.Sprintf("%v", readErr))
		var h [4]byte
		binary.BigEndian.PutUint32(h[:], stdinErrorBit|uint32(len(msg)))
		_, _ = (&net.Buffers{h[:], msg}).WriteTo(b.conn)
	case b.framed:
		var h [4]byte
		_, _ = b.conn.Write(h[:])
	}
	if uc, ok := b.conn.(*net.UnixConn); ok {
		uc.CloseWrite()
	}
	// The plugin hangs up once the task's stdin took the last byte.
	io.Copy(io.Discard, b.conn)
}

package wire

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"

	"github.com/jtarchie/pocketci/internal/bulk"

	"github.com/jtarchie/pocketci/proto/driverv1"
)

// The host's half of a task's stdin (its twin is server_stdin.go): a bulk
// connection that opens before the task starts, copies the caller's reader
// to the plugin with back-pressure from the task's pipe, and ends the way
// the reader ended: at its end, or with its error. It lives until the input
// ends, the container is cleaned up or the driver closes.

// stdinChunk is the largest frame of stdin worth sending.
const stdinChunk = 256 << 10

// sendStdin opens the stdin connection for run, naming it in run's
// StdinToken, and copies r into it in the background.
func (d *clientDriver) sendStdin(run *driverv1.RunContainerRequest, r io.Reader) (*liveConn, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return nil, fmt.Errorf("token: %w", err)
	}
	run.StdinToken = hex.EncodeToString(b)
	req := &driverv1.BulkRequest{Kind: &driverv1.BulkRequest_Stdin{Stdin: run.StdinToken}}
	framing := d.client.stdinFraming()
	if framing.legacy {
		req.Kind = &driverv1.BulkRequest_StdinFramedToken{StdinFramedToken: run.StdinToken}
	}
	conn, stop, err := d.client.dialBulk(context.Background(), req)
	if err != nil {
		return nil, err
	}
	stop()
	live, err := d.track(conn)
	if err != nil {
		return nil, err
	}
	go func() {
		defer live.end()
		copyStdin(conn, r, framing)
	}()
	return live, nil
}

// copyStdin copies r to conn in frames, then ends the input as r ended and
// waits for the plugin to hang up, which it does once the task's stdin took
// the last byte.
func copyStdin(conn net.Conn, r io.Reader, framing stdinFraming) {
	buf := make([]byte, stdinChunk)
	for {
		n, rerr := r.Read(buf)
		if n > 0 {
			if err := framing.data(conn, buf[:n]); err != nil {
				return // the task no longer reads: the plugin hung up
			}
		}
		if rerr != nil {
			if errors.Is(rerr, io.EOF) {
				rerr = nil
			}
			if framing.end(conn, rerr) != nil {
				return
			}
			if uc, ok := conn.(*net.UnixConn); ok {
				_ = uc.CloseWrite()
			}
			_, _ = io.Copy(io.Discard, conn)
			return
		}
	}
}

// stdinFraming writes a stdin connection's frames: the bulk framing, or
// protocol 1.3's own (client_compat13.go).
type stdinFraming struct {
	legacy bool
	data   func(w io.Writer, p []byte) error
	end    func(w io.Writer, readErr error) error
}

// bulkStdinFraming is the stdin framing of protocol 1.4.
var bulkStdinFraming = stdinFraming{
	data: func(w io.Writer, p []byte) error { return bulk.WriteFrame(w, bulk.Data, p) },
	end: func(w io.Writer, readErr error) error {
		return bulk.WriteFrame(w, bulk.End, bulk.StatusBytes(endStatus(readErr)))
	},
}

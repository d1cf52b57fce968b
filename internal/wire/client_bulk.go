package wire

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strings"

	"github.com/jtarchie/pocketci/internal/bulk"
	"github.com/jtarchie/pocketci/proto/driverv1"
)

// The host's half of the bulk socket (its twin is server_bulk.go): dialing
// a connection, and the output and input streams connections share.

// resolveInside returns addr with symlinks evaluated, when it is inside dir
// (cleaned, with symlinks evaluated, so neither ".." nor a link leads out).
func resolveInside(addr, dir string) (string, error) {
	if !filepath.IsAbs(addr) {
		return "", errors.New("not an absolute path")
	}
	root, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return "", fmt.Errorf("socket directory: %w", err)
	}
	resolved, err := filepath.EvalSymlinks(filepath.Clean(addr))
	if err != nil {
		return "", err
	}
	rel, err := filepath.Rel(root, resolved)
	if err != nil || rel == "." || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
		return "", fmt.Errorf("outside the private socket directory %s", dir)
	}
	return resolved, nil
}

// dialBulk opens a bulk connection that asks for req. It is closed when ctx
// ends, until stop is called.
func (c *Client) dialBulk(ctx context.Context, req *driverv1.BulkRequest) (conn net.Conn, stop func() bool, err error) {
	var d net.Dialer
	conn, err = d.DialContext(ctx, "unix", c.bulk)
	if err != nil {
		return nil, nil, fmt.Errorf("bulk socket: %w", err)
	}
	bulk.Tune(conn)
	if err := bulk.WriteMessage(conn, req); err != nil {
		conn.Close()
		return nil, nil, fmt.Errorf("bulk socket: %w", err)
	}
	return conn, context.AfterFunc(ctx, func() { conn.Close() }), nil
}

// readOutput reads a bulk connection's output into stdout and stderr, and
// hands its exit code, checked, to exit.
func (c *Client) readOutput(op string, conn io.Reader, stdout, stderr io.Writer, exit func(int)) (outcome, err error) {
	return bulk.ReadFrames(conn, func(kind byte, p []byte) error {
		switch kind {
		case bulk.Data:
			return writeOutput(stdout, p)
		case bulk.Stderr:
			return writeOutput(stderr, p)
		}
		code, ok := bulk.ExitCode(p)
		if !ok {
			return c.invalidReply(op, "an exit frame of %d bytes", len(p))
		}
		if err := c.checkExitCode(op, code); err != nil {
			return err
		}
		exit(int(code))
		return nil
	})
}

// sendStream copies r as data frames, then ends the stream the way r ended:
// cleanly, or with r's error as its message (the identity of a sentinel it
// wraps is the caller's, not the plugin's).
func sendStream(fw *bulk.Writer, r io.Reader) error {
	_, rerr := io.Copy(fw.Stream(bulk.Data), r)
	return fw.End(endStatus(rerr))
}

// endStatus is a reader's error as the end frame of a stream from the host
// carries it.
func endStatus(err error) error {
	if err == nil {
		return nil
	}
	return toStatus(errors.New(err.Error()))
}

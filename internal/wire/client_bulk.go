package wire

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strings"

	"google.golang.org/genproto/googleapis/rpc/status"
	grpcstatus "google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/jtarchie/pocketci/pluginsdk/proto/driverv1"
)

// UseBulk makes the client carry stdin and logs over the plugin's bulk
// socket at addr (Info.BulkAddr) instead of gRPC streams. The host does so
// when the plugin has the "bulk" capability and the channel is not meant to
// be encrypted (the bulk socket is a plain unix socket in the same private
// directory as the gRPC one, so it is not used with AutoMTLS).
func (c *Client) UseBulk(addr string) { c.bulk = addr }

// UseBulkIn is UseBulk for a plugin the host started with dir as its
// private socket directory: addr must resolve inside dir (cleaned, with
// symlinks evaluated, so neither ".." nor a link leads out), or it is
// refused and the client keeps to gRPC.
func (c *Client) UseBulkIn(addr, dir string) error {
	resolved, err := resolveInside(addr, dir)
	if err != nil {
		return fmt.Errorf("plugin %s: bulk socket %q: %w", c.name, addr, err)
	}
	c.bulk = resolved
	return nil
}

// resolveInside returns addr with symlinks evaluated, when it is inside dir.
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
// ends.
func (c *Client) dialBulk(ctx context.Context, req *driverv1.BulkRequest) (net.Conn, func() bool, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", c.bulk)
	if err != nil {
		return nil, nil, fmt.Errorf("bulk socket: %w", err)
	}
	if err := writeBulkRequest(conn, req); err != nil {
		conn.Close()
		return nil, nil, err
	}
	return conn, context.AfterFunc(ctx, func() { conn.Close() }), nil
}

// errBulkUnreachable says the bulk socket could not be reached: the call
// goes over gRPC instead.
var errBulkUnreachable = errors.New("bulk socket unreachable")

// bulkLogs reads the container's output, from the start, as frames from the
// bulk socket. (The host follows logs over gRPC; see container.logs.)
func (c *container) bulkLogs(ctx context.Context, stdout, stderr io.Writer, op string) error {
	conn, stop, err := c.driver.client.dialBulk(ctx, &driverv1.BulkRequest{Kind: &driverv1.BulkRequest_Logs{
		Logs: &driverv1.LogsRequest{Container: c.ref, DeadlineUnixNano: deadlineOf(ctx)},
	}})
	if err != nil {
		return errBulkUnreachable
	}
	defer stop()
	defer conn.Close()
	r := bufio.NewReaderSize(conn, 32<<10)
	var h [frameHeader]byte
	var buf []byte
	for {
		if _, err := io.ReadFull(r, h[:]); err != nil {
			return c.bulkError(ctx, op, err)
		}
		size := binary.BigEndian.Uint32(h[1:])
		if size > chunkSize {
			return fmt.Errorf("plugin %s: %s: a bulk frame of %d bytes is over the %d limit", c.driver.client.name, op, size, chunkSize)
		}
		if cap(buf) < int(size) {
			buf = make([]byte, size)
		}
		payload := buf[:size]
		if _, err := io.ReadFull(r, payload); err != nil {
			return c.bulkError(ctx, op, err)
		}
		switch h[0] {
		case frameStdout, frameStderr:
			w := stdout
			if h[0] == frameStderr {
				w = stderr
			}
			if _, err := w.Write(payload); err != nil {
				return fmt.Errorf("plugin %s: %s: write output: %w", c.driver.client.name, op, err)
			}
		case frameEnd:
			st := &status.Status{}
			if err := proto.Unmarshal(payload, st); err != nil {
				return fmt.Errorf("plugin %s: %s: bad end of logs: %w", c.driver.client.name, op, err)
			}
			return c.driver.wrap(op, grpcstatus.ErrorProto(st))
		default:
			return fmt.Errorf("plugin %s: %s: unknown bulk frame type %d", c.driver.client.name, op, h[0])
		}
	}
}

func (c *container) bulkError(ctx context.Context, op string, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("plugin %s: %s: %w", c.driver.client.name, op, ctx.Err())
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("plugin %s: %s: the plugin hung up before the end of the logs", c.driver.client.name, op)
	}
	return fmt.Errorf("plugin %s: %s: %w", c.driver.client.name, op, err)
}

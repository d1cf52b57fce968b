package wire

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"

	"github.com/jtarchie/pocketci/proto/driverv1"
)

// The host's half of the bulk socket (its twin is server_bulk.go).

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
	if err := writeMessage(conn, req); err != nil {
		conn.Close()
		return nil, nil, fmt.Errorf("bulk socket: %w", err)
	}
	return conn, context.AfterFunc(ctx, func() { conn.Close() }), nil
}

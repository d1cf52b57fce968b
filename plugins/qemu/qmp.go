package qemu

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"time"
)

// qmpConn is a QEMU Machine Protocol connection (the monitor socket): one
// JSON object per line, asynchronous events interleaved with replies.
type qmpConn struct {
	conn net.Conn
	r    *bufio.Reader
}

// dialQMP connects to the monitor socket (retrying while qemu creates it),
// reads the greeting and leaves capability negotiation mode.
func dialQMP(ctx context.Context, path string) (*qmpConn, error) {
	var conn net.Conn
	for {
		var d net.Dialer
		var err error
		if conn, err = d.DialContext(ctx, "unix", path); err == nil {
			break
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("connect to QMP: %w (last: %w)", ctx.Err(), err)
		case <-time.After(5 * time.Millisecond):
		}
	}
	q := &qmpConn{conn: conn, r: bufio.NewReader(conn)}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Now()) })
	defer stop()
	if _, err := q.r.ReadBytes('\n'); err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("read QMP greeting: %w", err)
	}
	if err := q.exec(ctx, "qmp_capabilities", nil, nil); err != nil {
		_ = conn.Close()
		return nil, err
	}
	return q, nil
}

func (q *qmpConn) close() { _ = q.conn.Close() }

// exec runs one command and decodes its "return" into out (when not nil).
func (q *qmpConn) exec(ctx context.Context, cmd string, args, out any) error {
	stop := context.AfterFunc(ctx, func() { _ = q.conn.SetDeadline(time.Now()) })
	defer stop()
	req := map[string]any{"execute": cmd}
	if args != nil {
		req["arguments"] = args
	}
	data, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("encode QMP %s: %w", cmd, err)
	}
	if _, err := q.conn.Write(append(data, '\n')); err != nil {
		return fmt.Errorf("send QMP %s: %w", cmd, err)
	}
	for {
		line, err := q.r.ReadBytes('\n')
		if err != nil {
			return fmt.Errorf("read QMP %s reply: %w", cmd, err)
		}
		var rep struct {
			Return json.RawMessage `json:"return"`
			Error  *struct {
				Class string `json:"class"`
				Desc  string `json:"desc"`
			} `json:"error"`
		}
		if err := json.Unmarshal(line, &rep); err != nil {
			return fmt.Errorf("decode QMP %s reply: %w", cmd, err)
		}
		switch {
		case rep.Error != nil:
			return fmt.Errorf("QMP %s: %s: %s", cmd, rep.Error.Class, rep.Error.Desc)
		case rep.Return != nil:
			if out != nil {
				if err := json.Unmarshal(rep.Return, out); err != nil {
					return fmt.Errorf("decode QMP %s return: %w", cmd, err)
				}
			}
			return nil
		}
		// An event: skip it.
	}
}

// qmpQuit sends quit on the monitor socket.
func qmpQuit(path string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	q, err := dialQMP(ctx, path)
	if err != nil {
		return err
	}
	defer q.close()
	// qemu may close the socket before it answers: that is success too.
	if err := q.exec(ctx, "quit", nil, nil); err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
		return err
	}
	return nil
}

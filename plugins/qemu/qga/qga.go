// Package qga is a small client for the QEMU Guest Agent protocol: one JSON
// object per line over a unix socket (the host end of the agent's
// virtio-serial chardev). It implements guest-sync-delimited (with the 0xFF
// delimiter and id matching that skips stale replies), guest-ping, guest-exec
// and guest-exec-status. Requests are serialized: one request is on the wire
// at a time, as the agent expects a single client.
package qga

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"time"
)

// delimiter is the byte the agent sends before a guest-sync-delimited reply,
// and the byte a client sends to reset the agent's JSON parser.
const delimiter = 0xFF

// Error is an error reply from the agent.
type Error struct {
	Class string `json:"class"`
	Desc  string `json:"desc"`
}

// Error implements error.
func (e *Error) Error() string { return fmt.Sprintf("guest agent: %s: %s", e.Class, e.Desc) }

// ErrDesync means a reply did not fit the request; the client resynchronizes
// before its next request.
var ErrDesync = errors.New("guest agent: reply out of sync")

// Client talks to one guest agent. It is safe for concurrent use; requests
// are serialized.
type Client struct {
	mu     sync.Mutex
	conn   net.Conn
	r      *bufio.Reader
	synced bool // false after an interrupted request: resync before the next one
}

// Dial connects to the agent's unix socket. It does not talk to the agent;
// call Sync before other requests.
func Dial(ctx context.Context, path string) (*Client, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("connect to guest agent socket %s: %w", path, err)
	}
	return &Client{conn: conn, r: bufio.NewReaderSize(conn, 64<<10)}, nil
}

// Close closes the connection.
func (c *Client) Close() error {
	if err := c.conn.Close(); err != nil {
		return fmt.Errorf("close guest agent connection: %w", err)
	}
	return nil
}

// Sync sends guest-sync-delimited and reads replies until the one carrying
// its id arrives, skipping 0xFF delimiters and stale replies. It works before
// the agent is up: QEMU holds the bytes until the guest opens its port, so
// ctx bounds how long to wait for the guest to boot.
func (c *Client) Sync(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.syncLocked(ctx, false)
}

func (c *Client) syncLocked(ctx context.Context, reset bool) error {
	stop := c.watch(ctx)
	defer stop()
	if reset {
		// A lone 0xFF makes the agent drop a partly received request.
		if _, err := c.conn.Write([]byte{delimiter}); err != nil {
			return c.fail(ctx, fmt.Errorf("reset guest agent parser: %w", err))
		}
	}
	id := rand.Int64N(1<<52) + 1
	req, err := json.Marshal(request{Execute: "guest-sync-delimited", Arguments: map[string]int64{"id": id}})
	if err != nil {
		return fmt.Errorf("encode guest-sync-delimited: %w", err)
	}
	if _, err := c.conn.Write(append(req, '\n')); err != nil {
		return c.fail(ctx, fmt.Errorf("send guest-sync-delimited: %w", err))
	}
	for {
		line, err := c.readLine()
		if err != nil {
			return c.fail(ctx, fmt.Errorf("read guest-sync-delimited reply: %w", err))
		}
		var rep struct {
			Return *int64 `json:"return"`
		}
		if json.Unmarshal(line, &rep) == nil && rep.Return != nil && *rep.Return == id {
			c.synced = true
			return nil
		}
		// A stale reply (an earlier sync, or the answer to an interrupted
		// request, or the agent's complaint about the reset byte): skip it.
	}
}

// Ping sends guest-ping.
func (c *Client) Ping(ctx context.Context) error {
	return c.Do(ctx, "guest-ping", nil, nil)
}

// ExecRequest are the arguments of guest-exec. Data fields are []byte and
// travel base64-encoded, as the protocol wants.
type ExecRequest struct {
	Path          string   `json:"path"`
	Args          []string `json:"arg,omitempty"`
	Env           []string `json:"env,omitempty"`
	InputData     []byte   `json:"input-data,omitempty"`
	CaptureOutput bool     `json:"capture-output,omitempty"`
}

// Exec starts a process in the guest and returns its pid.
func (c *Client) Exec(ctx context.Context, req ExecRequest) (int, error) {
	var rep struct {
		PID int `json:"pid"`
	}
	if err := c.Do(ctx, "guest-exec", req, &rep); err != nil {
		return 0, err
	}
	return rep.PID, nil
}

// ExecStatus is the reply of guest-exec-status. The agent returns a finished
// process's result once and then forgets the pid: keep it.
type ExecStatus struct {
	Exited       bool   `json:"exited"`
	ExitCode     *int   `json:"exitcode,omitempty"`
	Signal       *int   `json:"signal,omitempty"`
	OutData      []byte `json:"out-data,omitempty"`
	ErrData      []byte `json:"err-data,omitempty"`
	OutTruncated bool   `json:"out-truncated,omitempty"`
	ErrTruncated bool   `json:"err-truncated,omitempty"`
}

// Code is the exit code of an exited process: its exit status, or 128+N
// when signal N killed it.
func (s ExecStatus) Code() int {
	switch {
	case s.Signal != nil:
		return 128 + *s.Signal
	case s.ExitCode != nil:
		return *s.ExitCode
	default:
		return -1
	}
}

// ExecStatus asks for the state of a process started with Exec.
func (c *Client) ExecStatus(ctx context.Context, pid int) (ExecStatus, error) {
	var st ExecStatus
	err := c.Do(ctx, "guest-exec-status", map[string]int{"pid": pid}, &st)
	return st, err
}

type request struct {
	Execute   string `json:"execute"`
	Arguments any    `json:"arguments,omitempty"`
}

type reply struct {
	Return json.RawMessage `json:"return"`
	Error  *Error          `json:"error"`
}

// Do sends one command and decodes its return value into result (when not
// nil). An error reply comes back as *Error.
func (c *Client) Do(ctx context.Context, command string, args, result any) error {
	req, err := json.Marshal(request{Execute: command, Arguments: args})
	if err != nil {
		return fmt.Errorf("encode %s: %w", command, err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.synced {
		if err := c.syncLocked(ctx, true); err != nil {
			return err
		}
	}
	stop := c.watch(ctx)
	defer stop()
	if _, err := c.conn.Write(append(req, '\n')); err != nil {
		return c.fail(ctx, fmt.Errorf("send %s: %w", command, err))
	}
	line, err := c.readLine()
	if err != nil {
		return c.fail(ctx, fmt.Errorf("read %s reply: %w", command, err))
	}
	var rep reply
	if err := json.Unmarshal(line, &rep); err != nil {
		c.synced = false
		return fmt.Errorf("decode %s reply %q: %w", command, line, err)
	}
	if rep.Error != nil {
		return fmt.Errorf("%s: %w", command, rep.Error)
	}
	if rep.Return == nil {
		c.synced = false
		return fmt.Errorf("%s: reply %q: %w", command, line, ErrDesync)
	}
	if result != nil {
		if err := json.Unmarshal(rep.Return, result); err != nil {
			return fmt.Errorf("decode %s return value: %w", command, err)
		}
	}
	return nil
}

// readLine reads one reply line, dropping 0xFF delimiters and blank lines.
func (c *Client) readLine() ([]byte, error) {
	for {
		line, err := c.r.ReadBytes('\n')
		if err != nil {
			return nil, err
		}
		line = bytes.TrimSpace(bytes.ReplaceAll(line, []byte{delimiter}, nil))
		if len(line) > 0 {
			return line, nil
		}
	}
}

// watch makes blocking I/O honour ctx: its deadline becomes the
// connection's, and cancellation interrupts it.
func (c *Client) watch(ctx context.Context) func() {
	deadline, _ := ctx.Deadline()
	_ = c.conn.SetDeadline(deadline)
	var mu sync.Mutex
	done := false
	stop := context.AfterFunc(ctx, func() {
		mu.Lock()
		defer mu.Unlock()
		if !done {
			_ = c.conn.SetDeadline(time.Unix(1, 0))
		}
	})
	return func() {
		stop()
		mu.Lock()
		done = true
		mu.Unlock()
		_ = c.conn.SetDeadline(time.Time{})
	}
}

// fail marks the stream out of sync after an interrupted request and prefers
// the context's error when it caused the failure.
func (c *Client) fail(ctx context.Context, err error) error {
	c.synced = false
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() && ctx.Err() == nil {
		// The connection deadline is the context's: the context ends now.
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
	if ctxErr := ctx.Err(); ctxErr != nil {
		return fmt.Errorf("%w (%w)", err, ctxErr)
	}
	return err
}

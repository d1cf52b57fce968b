package qemu

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/jtarchie/pocketci/plugins/qemu/guestproto"
)

// guestdClient is the host half of guestproto: it starts and kills tasks in
// pocketci-guestd and hands each task's exit event to the callback given
// at its start. Events are pushed by the guest, so nothing polls.
type guestdClient struct {
	conn net.Conn

	sendMu sync.Mutex

	mu      sync.Mutex
	nextID  uint64
	waiting map[uint64]func(ev guestproto.Event, lost error)
	lost    error // set when the connection ended; later starts fail
}

// errGuestdRestarted is what a running task's callback gets when the
// daemon started again under it (its tasks are gone).
var errGuestdRestarted = errors.New("the guest's task daemon restarted")

// dialGuestd connects to the daemon's socket and says hello: everything
// read before the answer carrying this hello's nonce is stale.
func dialGuestd(ctx context.Context, path string) (*guestdClient, error) {
	var conn net.Conn
	for {
		var err error
		var d net.Dialer
		if conn, err = d.DialContext(ctx, "unix", path); err == nil {
			break
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("connect to the guest daemon's socket %s: %w (last: %w)", path, ctx.Err(), err)
		case <-time.After(5 * time.Millisecond):
		}
	}
	g := &guestdClient{conn: conn, waiting: make(map[uint64]func(guestproto.Event, error))}
	nonce := make([]byte, 8)
	_, _ = rand.Read(nonce)
	hello := guestproto.Request{Op: guestproto.OpHello, Nonce: hex.EncodeToString(nonce)}
	r := bufio.NewReaderSize(conn, 64<<10)
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Now()) })
	err := g.send(hello)
	for err == nil {
		var ev guestproto.Event
		if ev, err = readEvent(r); err != nil {
			break
		}
		if ev.Ev != guestproto.EvHello || ev.Nonce != hello.Nonce {
			continue // stale: from before this connection
		}
		if ev.Proto != guestproto.Version {
			err = fmt.Errorf("the guest's pocketci-guestd speaks protocol %d, this driver %d: rebuild the guest with guest/build.sh", ev.Proto, guestproto.Version)
		}
		break
	}
	if !stop() || err != nil {
		_ = conn.Close()
		if ctx.Err() != nil {
			return nil, fmt.Errorf("hello to the guest daemon: %w", ctx.Err())
		}
		return nil, fmt.Errorf("hello to the guest daemon: %w", err)
	}
	_ = conn.SetDeadline(time.Time{})
	go g.read(r)
	return g, nil
}

// readEvent reads one event line; a line that does not parse is skipped.
func readEvent(r *bufio.Reader) (guestproto.Event, error) {
	for {
		line, err := r.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			for errors.Is(err, bufio.ErrBufferFull) { // no event is this long: skip it
				_, err = r.ReadSlice('\n')
			}
			continue
		}
		if err != nil {
			return guestproto.Event{}, err
		}
		var ev guestproto.Event
		if json.Unmarshal(line, &ev) == nil && ev.Ev != "" {
			return ev, nil
		}
	}
}

// read dispatches events until the connection ends, then fails every
// waiting task with the reason.
func (g *guestdClient) read(r *bufio.Reader) {
	for {
		ev, err := readEvent(r)
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
				err = errors.New("the connection to the guest daemon ended")
			}
			g.fail(err)
			return
		}
		switch ev.Ev {
		case guestproto.EvExit:
			g.mu.Lock()
			done := g.waiting[ev.ID]
			delete(g.waiting, ev.ID)
			g.mu.Unlock()
			if done != nil {
				done(ev, nil)
			}
		case guestproto.EvHello:
			if ev.Nonce == "" { // the daemon's own hello at its start
				g.failWaiting(errGuestdRestarted)
			}
		}
	}
}

// fail ends the client: every waiting task and every later start get err.
func (g *guestdClient) fail(err error) {
	g.mu.Lock()
	if g.lost == nil {
		g.lost = err
	}
	g.mu.Unlock()
	g.failWaiting(err)
}

func (g *guestdClient) failWaiting(err error) {
	g.mu.Lock()
	waiting := g.waiting
	g.waiting = make(map[uint64]func(guestproto.Event, error))
	g.mu.Unlock()
	for _, done := range waiting {
		done(guestproto.Event{}, err)
	}
}

// start starts a task; done is called once, with its exit event or with
// the reason the event will never come, unless start returns an error.
func (g *guestdClient) start(s *guestproto.Start, done func(ev guestproto.Event, lost error)) (uint64, error) {
	g.mu.Lock()
	if g.lost != nil {
		g.mu.Unlock()
		return 0, g.lost
	}
	g.nextID++
	id := g.nextID
	g.waiting[id] = done
	g.mu.Unlock()
	if err := g.send(guestproto.Request{Op: guestproto.OpStart, ID: id, Start: s}); err != nil {
		g.mu.Lock()
		_, mine := g.waiting[id]
		delete(g.waiting, id)
		g.mu.Unlock()
		if mine {
			return 0, err
		}
		// The connection failed under the send, and done already has
		// (or is being given) the reason: done is called exactly once.
	}
	return id, nil
}

// kill asks the daemon to kill task id; its exit event follows.
func (g *guestdClient) kill(id uint64) error {
	return g.send(guestproto.Request{Op: guestproto.OpKill, ID: id})
}

func (g *guestdClient) send(req guestproto.Request) error {
	data, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("encode a request to the guest daemon: %w", err)
	}
	g.sendMu.Lock()
	defer g.sendMu.Unlock()
	if _, err := g.conn.Write(append(data, '\n')); err != nil {
		return fmt.Errorf("send to the guest daemon: %w", err)
	}
	return nil
}

// close ends the connection; waiting tasks get an error.
func (g *guestdClient) close() {
	_ = g.conn.Close()
}

package wire

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"google.golang.org/grpc/status"

	"github.com/jtarchie/pocketci/internal/bulk"
)

// The stdin registry: a task's stdin arrives on its own bulk connection,
// named by a token the host put in RunContainer. The stream and
// RunContainer may come in either order; whichever comes first creates the
// pipe between them. An entry lives until its stream ends, or
// its task is refused, cleaned up or closed with its driver; one that a
// stream created and no RunContainer claims is closed after claimTimeout.
// A task closed before its stream arrived leaves its closed pipe for
// claimTimeout, so that the late stream finds it closed (and ends at once)
// instead of feeding a new pipe nobody reads.
// The input ends the way the host's reader ended: at its end, or with its
// error (CloseWithError), never a clean end after a failure.

// claimTimeout bounds how long a stdin stream waits for its RunContainer.
const claimTimeout = time.Minute

// stdinPipe connects a stdin stream to a task's Stdin reader.
type stdinPipe struct {
	token string
	r     *io.PipeReader
	w     *io.PipeWriter
	reg   *stdinRegistry
	// attached is set once a stream took the pipe.
	attached bool
	// unclaimed, while set, closes a pipe no RunContainer claimed, or
	// forgets a closed pipe no stream came for.
	unclaimed *time.Timer
}

// close ends the task's stdin with err and forgets the entry, or, when its
// stream has not come yet, keeps it closed for that stream for a while.
func (p *stdinPipe) close(err error) {
	p.r.CloseWithError(err)
	r := p.reg
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.pipes[p.token] != p {
		return
	}
	if p.attached {
		r.dropLocked(p)
		return
	}
	if p.unclaimed == nil {
		p.unclaimed = time.AfterFunc(r.timeout, func() { r.drop(p) })
	}
}

type stdinRegistry struct {
	mu      sync.Mutex
	pipes   map[string]*stdinPipe
	timeout time.Duration
}

func newStdinRegistry() *stdinRegistry {
	return &stdinRegistry{pipes: map[string]*stdinPipe{}, timeout: claimTimeout}
}

// getLocked returns the pipe for token, creating it; the caller holds r.mu.
func (r *stdinRegistry) getLocked(token string) (*stdinPipe, bool) {
	p, ok := r.pipes[token]
	if !ok {
		pr, pw := io.Pipe()
		p = &stdinPipe{token: token, r: pr, w: pw, reg: r}
		r.pipes[token] = p
	}
	return p, !ok
}

// claim is RunContainer's side: the pipe whose reader becomes task.Stdin.
func (r *stdinRegistry) claim(token string) *stdinPipe {
	r.mu.Lock()
	defer r.mu.Unlock()
	p, _ := r.getLocked(token)
	p.stopTimer()
	return p
}

// attach is the stream's side: the pipe its bytes go into.
func (r *stdinRegistry) attach(token string) *stdinPipe {
	r.mu.Lock()
	defer r.mu.Unlock()
	p, created := r.getLocked(token)
	p.attached = true
	if created {
		p.unclaimed = time.AfterFunc(r.timeout, func() {
			p.close(fmt.Errorf("stdin stream: no task claimed it within %v", r.timeout))
		})
	}
	return p
}

// drop forgets p.
func (r *stdinRegistry) drop(p *stdinPipe) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.dropLocked(p)
}

func (r *stdinRegistry) dropLocked(p *stdinPipe) {
	if r.pipes[p.token] == p {
		delete(r.pipes, p.token)
	}
	p.stopTimer()
}

// stopTimer stops the unclaimed timer; the caller holds the registry's lock.
func (p *stdinPipe) stopTimer() {
	if p.unclaimed != nil {
		p.unclaimed.Stop()
		p.unclaimed = nil
	}
}

// errStdinGone is what a stdin stream gets once the task stopped reading
// (it exited or was cleaned up): the rest has nowhere to go.
var errStdinGone = errors.New("the task no longer reads stdin")

// serveStdin feeds the frames of a stdin connection to the task's pipe and
// ends its input the way the host's reader ended: cleanly at a clean end
// frame, else with the error the end frame or the transport gave.
func (s *Server) serveStdin(conn net.Conn, token string) {
	if token == "" {
		return
	}
	pipe := s.stdins.attach(token)
	defer s.stdins.drop(pipe)
	outcome, err := bulk.ReadFrames(conn, func(_ byte, data []byte) error {
		if _, err := pipe.w.Write(data); err != nil {
			return errStdinGone
		}
		return nil
	})
	switch {
	case errors.Is(err, errStdinGone):
	case err != nil:
		pipe.w.CloseWithError(fmt.Errorf("stdin from host: %w", err))
	case outcome != nil:
		pipe.w.CloseWithError(fmt.Errorf("stdin from host: %s", status.Convert(outcome).Message()))
	default:
		pipe.w.Close()
	}
}

package wire

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/jtarchie/pocketci/pluginsdk/proto/driverv1"
)

// The stdin registry: a task's stdin arrives on its own stream (WriteStdin,
// or a bulk connection), named by a token the host put in RunContainer. The
// stream and RunContainer may come in either order; whichever comes first
// creates the pipe between them. An entry lives until its stream ends, or
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

// get returns the pipe for token, creating it; the caller holds r.mu.
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
	if p.unclaimed != nil {
		p.unclaimed.Stop()
		p.unclaimed = nil
	}
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
	if p.unclaimed != nil {
		p.unclaimed.Stop()
		p.unclaimed = nil
	}
}

// len is the number of entries, for tests.
func (r *stdinRegistry) len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.pipes)
}

// errStdinGone is what a stdin stream gets once the task stopped reading.
var errStdinGone = errors.New("the task no longer reads stdin")

// feed writes data to the task's stdin. An error means the reader is gone
// (the task exited or was cleaned up): the rest has nowhere to go.
func (p *stdinPipe) feed(data []byte) error {
	if _, err := p.w.Write(data); err != nil {
		return errStdinGone
	}
	return nil
}

// end ends the task's stdin: cleanly for nil, else with err.
func (p *stdinPipe) end(err error) {
	if err == nil {
		p.w.Close()
		return
	}
	p.w.CloseWithError(err)
}

// WriteStdin serves a task's stdin on gRPC: a chunk with an error ends it
// with that error; a stream that breaks ends it with the break.
func (s *server) WriteStdin(stream driverv1.Driver_WriteStdinServer) error {
	first := newStdinChunk()
	if err := stream.RecvMsg(first); err != nil {
		return status.Errorf(codes.InvalidArgument, "stdin stream ended before its first chunk: %v", err)
	}
	token := first.GetToken()
	if token == "" {
		first.free()
		return status.Error(codes.InvalidArgument, "stdin stream: first chunk has no token")
	}
	pipe := s.stdins.attach(token)
	defer s.stdins.drop(pipe)
	// A write blocked on a task that does not read must end with the stream.
	stop := context.AfterFunc(stream.Context(), func() {
		pipe.end(fmt.Errorf("stdin stream from host: %w", stream.Context().Err()))
	})
	defer stop()
	chunk := first
	for {
		if data := chunk.GetData(); len(data) > 0 {
			err := pipe.feed(data)
			chunk.free()
			if err != nil {
				return stream.SendAndClose(&driverv1.WriteStdinResponse{})
			}
		}
		if msg := chunk.GetError(); msg != "" {
			pipe.end(fmt.Errorf("stdin from host: %s", msg))
			return stream.SendAndClose(&driverv1.WriteStdinResponse{})
		}
		chunk = newStdinChunk()
		err := stream.RecvMsg(chunk)
		if errors.Is(err, io.EOF) {
			pipe.end(nil)
			return stream.SendAndClose(&driverv1.WriteStdinResponse{})
		}
		if err != nil {
			pipe.end(fmt.Errorf("stdin stream from host: %w", err))
			return err
		}
	}
}

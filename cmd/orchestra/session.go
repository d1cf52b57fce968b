package main

import (
	"context"
	"sync"

	"github.com/jtarchie/pocketci/host"
)

// session is what one run of orchestra started: the hosts whose plugins a
// second Ctrl-C kills.
type session struct {
	mu    sync.Mutex
	hosts []*host.Host
}

func (s *session) add(h *host.Host) {
	s.mu.Lock()
	s.hosts = append(s.hosts, h)
	s.mu.Unlock()
}

// kill kills every plugin the session's hosts started.
func (s *session) kill() {
	s.mu.Lock()
	hosts := append([]*host.Host(nil), s.hosts...)
	s.mu.Unlock()
	for _, h := range hosts {
		h.Kill()
	}
}

type sessionKey struct{}

func withSession(ctx context.Context, s *session) context.Context {
	return context.WithValue(ctx, sessionKey{}, s)
}

func sessionOf(ctx context.Context) *session {
	s, _ := ctx.Value(sessionKey{}).(*session)
	return s
}

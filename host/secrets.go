package host

import (
	"context"
	"encoding/json"
	"log/slog"
	"slices"
	"sync"

	"github.com/jtarchie/pocketci/internal/secrets"
)

// A driver config may carry secrets (tokens, kubeconfig contents). The host
// keeps every string of every config opened in a plugin out of that
// plugin's log records and of the stderr lines it shows, whatever the
// plugin writes; the wire client keeps them out of errors.

// secretSet is the config strings of one plugin's drivers.
type secretSet struct {
	mu   sync.RWMutex
	list []string
}

// add remembers the strings of config.
func (s *secretSet) add(config json.RawMessage) {
	found := secrets.Of(config)
	if len(found) == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, f := range found {
		if !slices.Contains(s.list, f) {
			s.list = append(s.list, f)
		}
	}
	// Longest first, so that a secret inside another is not left in part.
	slices.SortFunc(s.list, func(a, b string) int { return len(b) - len(a) })
}

// redact is str with every secret replaced.
func (s *secretSet) redact(str string) string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return secrets.Redact(str, s.list)
}

func (s *secretSet) redactAll(lines []string) []string {
	for i, l := range lines {
		lines[i] = s.redact(l)
	}
	return lines
}

// keepSecret adds the strings of config to the plugin's secrets.
func (p *Plugin) keepSecret(config json.RawMessage) { p.secrets.add(config) }

// redactHandler is a slog handler that redacts every string of a record.
type redactHandler struct {
	inner   slog.Handler
	secrets *secretSet
}

var _ slog.Handler = redactHandler{}

func (h redactHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.inner.Enabled(ctx, l)
}

func (h redactHandler) Handle(ctx context.Context, r slog.Record) error {
	out := slog.NewRecord(r.Time, r.Level, h.secrets.redact(r.Message), r.PC)
	r.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(h.attr(a))
		return true
	})
	return h.inner.Handle(ctx, out)
}

func (h redactHandler) attr(a slog.Attr) slog.Attr {
	switch a.Value.Kind() {
	case slog.KindString:
		return slog.String(a.Key, h.secrets.redact(a.Value.String()))
	case slog.KindGroup:
		group := a.Value.Group()
		attrs := make([]any, len(group))
		for i, g := range group {
			attrs[i] = h.attr(g)
		}
		return slog.Group(a.Key, attrs...)
	case slog.KindAny, slog.KindLogValuer:
		if err, ok := a.Value.Resolve().Any().(error); ok {
			return slog.String(a.Key, h.secrets.redact(err.Error()))
		}
		return slog.String(a.Key, h.secrets.redact(a.Value.Resolve().String()))
	}
	return a
}

func (h redactHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	clean := make([]slog.Attr, len(attrs))
	for i, a := range attrs {
		clean[i] = h.attr(a)
	}
	return redactHandler{h.inner.WithAttrs(clean), h.secrets}
}

func (h redactHandler) WithGroup(name string) slog.Handler {
	return redactHandler{h.inner.WithGroup(name), h.secrets}
}

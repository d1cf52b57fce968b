package host

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"strings"
	"sync"

	"github.com/hashicorp/go-hclog"
)

// hclogger gives go-plugin an hclog.Logger whose records, including the
// plugin's own slog records that go-plugin parses from its stderr, reach an
// slog.Logger with their level and attributes.
func hclogger(logger *slog.Logger) hclog.Logger {
	l := hclog.NewInterceptLogger(&hclog.LoggerOptions{Output: io.Discard, Level: hclog.Trace})
	l.RegisterSink(slogSink{logger})
	return l
}

type slogSink struct{ logger *slog.Logger }

func (s slogSink) Accept(name string, level hclog.Level, msg string, args ...interface{}) {
	lvl := slogLevel(level)
	ctx := context.Background()
	if !s.logger.Enabled(ctx, lvl) {
		return
	}
	attrs := make([]any, 0, len(args)+2)
	if name != "" {
		attrs = append(attrs, "logger", name)
	}
	attrs = append(attrs, args...)
	s.logger.Log(ctx, lvl, msg, attrs...)
}

func slogLevel(l hclog.Level) slog.Level {
	switch l {
	case hclog.Trace:
		return slog.LevelDebug - 4
	case hclog.Debug:
		return slog.LevelDebug
	case hclog.Info:
		return slog.LevelInfo
	case hclog.Warn:
		return slog.LevelWarn
	default:
		return slog.LevelError
	}
}

// maxStderrLine bounds one line of a plugin's stderr that the host keeps:
// the rest of a longer line is dropped, and the line marked as truncated.
const maxStderrLine = 64 << 10

// tail keeps the last lines written to it: a plugin's recent stderr, shown
// when it dies. It holds at most max lines of at most maxStderrLine bytes
// each, whatever the plugin writes.
type tail struct {
	mu        sync.Mutex
	max       int
	lines     []string // a ring once full: next is the oldest
	next      int
	part      []byte
	truncated bool
}

func newTail(max int) *tail { return &tail{max: max} }

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		chunk := p
		if i >= 0 {
			chunk = p[:i]
		}
		if room := maxStderrLine - len(t.part); room > 0 {
			t.part = append(t.part, chunk[:min(room, len(chunk))]...)
			if len(chunk) > room {
				t.truncated = true
			}
		} else if len(chunk) > 0 {
			t.truncated = true
		}
		if i < 0 {
			break
		}
		t.push(finishLine(t.part, t.truncated))
		t.part, t.truncated = t.part[:0], false
		p = p[i+1:]
	}
	return n, nil
}

func (t *tail) push(line string) {
	if len(t.lines) < t.max {
		t.lines = append(t.lines, line)
		return
	}
	t.lines[t.next] = line
	t.next = (t.next + 1) % t.max
}

// Lines returns the kept lines, oldest first.
func (t *tail) Lines() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]string, 0, len(t.lines)+1)
	out = append(out, t.lines[t.next:]...)
	out = append(out, t.lines[:t.next]...)
	if len(t.part) > 0 {
		out = append(out, finishLine(t.part, t.truncated))
	}
	return out
}

// lineLogger logs each line written to it. A line that is a plugin's log
// record in hclog JSON (as a reattached plugin sends its logs) is logged as
// that record, with its level and attributes.
type lineLogger struct {
	logger *slog.Logger
	msg    string
}

func (l lineLogger) Write(p []byte) (int, error) {
	for _, line := range strings.Split(strings.TrimRight(string(p), "\n"), "\n") {
		if line == "" {
			continue
		}
		if len(line) > maxStderrLine {
			line = strings.ToValidUTF8(line[:maxStderrLine], "") + truncMarker
		}
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) == nil {
			if msg, ok := rec["@message"].(string); ok {
				level, _ := rec["@level"].(string)
				attrs := []any{}
				for k, v := range rec {
					if !strings.HasPrefix(k, "@") {
						attrs = append(attrs, k, v)
					}
				}
				l.logger.Log(context.Background(), slogLevel(hclog.LevelFromString(level)), msg, attrs...)
				continue
			}
		}
		l.logger.Info(l.msg, "line", line)
	}
	return len(p), nil
}

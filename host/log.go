package host

import (
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

// tail keeps the last lines written to it: a plugin's recent stderr, shown
// when it dies.
type tail struct {
	mu    sync.Mutex
	max   int
	lines []string
	part  strings.Builder
}

func newTail(max int) *tail { return &tail{max: max} }

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, b := range p {
		if b != '\n' {
			t.part.WriteByte(b)
			continue
		}
		t.lines = append(t.lines, t.part.String())
		t.part.Reset()
		if len(t.lines) > t.max {
			t.lines = t.lines[len(t.lines)-t.max:]
		}
	}
	return len(p), nil
}

// Lines returns the kept lines, oldest first.
func (t *tail) Lines() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := append([]string(nil), t.lines...)
	if t.part.Len() > 0 {
		out = append(out, t.part.String())
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

package pluginproc

import (
	"io"
	"log/slog"
	"strings"
)

// hclogTimeFormat is the timestamp layout go-plugin parses from plugin logs.
const hclogTimeFormat = "2006-01-02T15:04:05.000000Z07:00"

// NewLogHandler returns a slog handler that writes JSON records in the shape
// go-plugin forwards to the host's logger (hclog's "@level", "@message" and
// "@timestamp" keys), keeping every attribute.
func NewLogHandler(w io.Writer, level slog.Leveler) slog.Handler {
	return slog.NewJSONHandler(w, &slog.HandlerOptions{
		Level: level,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) > 0 {
				return a
			}
			switch a.Key {
			case slog.TimeKey:
				return slog.String("@timestamp", a.Value.Time().Format(hclogTimeFormat))
			case slog.LevelKey:
				return slog.String("@level", strings.ToLower(a.Value.String()))
			case slog.MessageKey:
				return slog.String("@message", a.Value.String())
			}
			return a
		},
	})
}

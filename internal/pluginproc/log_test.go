package pluginproc

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

func TestLogHandlerSpeaksHclogJSON(t *testing.T) {
	var buf bytes.Buffer
	slog.New(NewLogHandler(&buf, slog.LevelDebug)).Warn("disk low", "free", 3, "path", "/x")
	line := buf.String()
	for _, want := range []string{`"@level":"warn"`, `"@message":"disk low"`, `"@timestamp":"`, `"free":3`, `"path":"/x"`} {
		if !strings.Contains(line, want) {
			t.Errorf("log line %s lacks %s", line, want)
		}
	}
}

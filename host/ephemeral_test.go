package host

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jtarchie/pocketci/orchestra"
)

// TestEphemeralOpenWarnsOnOldPlugin: an ephemeral namespace is marked on the
// wire; a plugin from before protocol 1.3 cannot honour the mark, and the
// host warns that only OrphanCleanup is left to clean it after a host death.
// A current plugin gets no warning. Either way the namespace works.
func TestEphemeralOpenWarnsOnOldPlugin(t *testing.T) {
	const warning = "plugin cannot mark a namespace ephemeral"
	for _, tc := range []struct {
		mode     string
		wantWarn bool
	}{
		{mode: "", wantWarn: false},
		{mode: "v1.2", wantWarn: true},
	} {
		t.Run("mode="+tc.mode, func(t *testing.T) {
			h, p, logs := hostileHost(t, tc.mode, Config{})
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			d, err := p.Open(ctx, "throwaway", OpenOptions{Ephemeral: true})
			if err != nil {
				t.Fatal(err)
			}
			c, err := d.RunContainer(ctx, orchestra.Task{ID: "t", Command: []string{"true"}})
			if err != nil {
				t.Fatal(err)
			}
			if err := c.Cleanup(ctx); err != nil {
				t.Fatal(err)
			}
			if got := strings.Contains(logs.String(), warning); got != tc.wantWarn {
				t.Fatalf("warning logged: %v, want %v; logs:\n%s", got, tc.wantWarn, logs)
			}
			if err := h.Close(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

package host

import (
	"context"
	"strings"
	"testing"

	"github.com/jtarchie/pocketci/internal/wire"
)

// TestRefusedPlugins: a plugin whose Info the host cannot serve (a protocol
// before 1.3, a version that is not 1.N, a repeated or unknown capability)
// is refused at its start with one line saying why, and is not left running.
func TestRefusedPlugins(t *testing.T) {
	tests := []struct {
		mode string
		want []string // each in the one line
	}{
		{"v1.0", []string{`protocol 1.0 is no longer served`, "rebuild the plugin with SDK " + wire.SDKVersion}},
		{"v1.2", []string{`protocol 1.2 is no longer served`, "rebuild the plugin with SDK " + wire.SDKVersion}},
		{"badversion", []string{`protocol version "abc"`, "not 1.N"}},
		{"badcaps", []string{`capability "run" twice`}},
	}
	for _, tt := range tests {
		t.Run(tt.mode, func(t *testing.T) {
			_, p, _ := hostileHost(t, tt.mode, Config{})
			for _, call := range []struct {
				name string
				do   func() error
			}{
				{"Info", func() error { _, err := p.Info(context.Background()); return err }},
				{"Open", func() error { _, err := p.Open(context.Background(), "refused", OpenOptions{}); return err }},
			} {
				err := call.do()
				if err == nil {
					t.Fatalf("%s of a %s plugin: no error, want a refusal", call.name, tt.mode)
				}
				msg := err.Error()
				if strings.Contains(msg, "\n") || !strings.Contains(msg, "plugin hostile") {
					t.Fatalf("%s: %q, want one line naming the plugin", call.name, msg)
				}
				for _, w := range tt.want {
					if !strings.Contains(msg, w) {
						t.Fatalf("%s: %q, want it to say %q", call.name, msg, w)
					}
				}
				if pid := p.PID(); pid != 0 {
					t.Fatalf("a refused plugin is left running as %d", pid)
				}
			}
		})
	}
	// badcaps also lists a capability no protocol defines: refused alone,
	// it is named (the check stops at the first fault, the repeat above).
	if _, err := wire.CheckInfo(wire.Info{ProtocolVersion: wire.ProtocolVersion, BulkAddr: "x",
		Capabilities: []string{wire.CapabilityBulk, wire.CapabilityRun, wire.CapabilityConfig, "teleport"}}); err == nil || !strings.Contains(err.Error(), `"teleport"`) {
		t.Fatalf("CheckInfo of an unknown capability: %v, want it named", err)
	}
}

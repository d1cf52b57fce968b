package wire

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestBulkAddrMustResolveInsideTheSocketDir: a plugin's bulk address is used
// only when, cleaned and with symlinks evaluated, it is inside the host's
// private socket directory.
func TestBulkAddrMustResolveInsideTheSocketDir(t *testing.T) {
	base := t.TempDir()
	private := filepath.Join(base, "private")
	outside := filepath.Join(base, "outside")
	for _, d := range []string{filepath.Join(private, "plugin"), outside} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	listen := func(path string) {
		l, err := net.Listen("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
	}
	inside := filepath.Join(private, "plugin", "bulk.sock")
	listen(inside)
	evil := filepath.Join(outside, "evil.sock")
	listen(evil)
	if err := os.Symlink(evil, filepath.Join(private, "plugin", "link.sock")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(private, "dirlink")); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, addr string
		ok         bool
	}{
		{"inside", inside, true},
		{"inside, uncleaned", filepath.Join(private, "plugin", ".", "bulk.sock"), true},
		{"dot-dot out", filepath.Join(private, "plugin") + "/../../outside/evil.sock", false},
		{"symlinked socket", filepath.Join(private, "plugin", "link.sock"), false},
		{"symlinked directory", filepath.Join(private, "dirlink", "evil.sock"), false},
		{"relative", "bulk.sock", false},
		{"the directory itself", private, false},
		{"missing", filepath.Join(private, "plugin", "none.sock"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := NewClient("p", nil)
			info := Info{ProtocolVersion: ProtocolVersion, Capabilities: sdkCapabilities, BulkAddr: tt.addr}
			err := c.Accept(info, private)
			if tt.ok != (err == nil) {
				t.Fatalf("Accept with bulk address %q = %v, want ok=%v", tt.addr, err, tt.ok)
			}
			if err != nil && (c.bulk != "" || !strings.Contains(err.Error(), "plugin p")) {
				t.Fatalf("refused address kept (%q) or error names no plugin: %v", c.bulk, err)
			}
		})
	}
}

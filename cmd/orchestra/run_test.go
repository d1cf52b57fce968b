package main

import (
	"strings"
	"testing"

	"github.com/jtarchie/pocketci/pluginsdk"
)

// TestByteSize: --memory takes bytes or docker's k/m/g suffixes, and
// refuses what is not a size, naming it.
func TestByteSize(t *testing.T) {
	tests := []struct {
		in      string
		want    int64
		wantErr bool
	}{
		{"0", 0, false},
		{"1048576", 1 << 20, false},
		{"64m", 64 << 20, false},
		{"64M", 64 << 20, false},
		{"64mb", 64 << 20, false},
		{"512k", 512 << 10, false},
		{"2g", 2 << 30, false},
		{"2GB", 2 << 30, false},
		{"", 0, true},
		{"m", 0, true},
		{"-1", 0, true},
		{"1.5g", 0, true},
		{"64x", 0, true},
		{"99999999999g", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			var b byteSize
			err := b.Set(tt.in)
			if tt.wantErr {
				if err == nil || !strings.Contains(err.Error(), tt.in) {
					t.Fatalf("Set(%q) = %v (%d); want an error naming it", tt.in, err, b)
				}
				return
			}
			if err != nil || int64(b) != tt.want {
				t.Fatalf("Set(%q) = %d, %v; want %d", tt.in, b, err, tt.want)
			}
		})
	}
}

// TestVersion: --version names the plugin protocol and the SDK this host
// pairs with, on one line.
func TestVersion(t *testing.T) {
	for _, arg := range []string{"--version", "version"} {
		var out strings.Builder
		if err := run(t.Context(), []string{arg}, nil, &out, &out); err != nil {
			t.Fatal(err)
		}
		got := out.String()
		if !strings.HasPrefix(got, "orchestra ") || !strings.Contains(got, "plugin protocol "+pluginsdk.ProtocolVersion) ||
			!strings.Contains(got, "pluginsdk "+pluginsdk.SDKVersion) || strings.Count(got, "\n") != 1 {
			t.Fatalf("%s: %q", arg, got)
		}
	}
}

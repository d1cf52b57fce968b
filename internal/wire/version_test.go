package wire

import (
	"fmt"
	"testing"
)

func TestProtocolVersionMatchesMajorAndMinor(t *testing.T) {
	if want := fmt.Sprintf("%d.%d", ProtocolMajor, ProtocolMinor); ProtocolVersion != want {
		t.Fatalf("ProtocolVersion %q, want %q", ProtocolVersion, want)
	}
}

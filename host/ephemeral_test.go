package host

import (
	"context"
	"testing"
	"time"

	"github.com/jtarchie/pocketci/orchestra"
	"github.com/jtarchie/pocketci/plugins/native"
)

// TestEphemeralNamespace: a namespace opened ephemeral works like any other,
// and its driver's Close through the host removes it. (What happens to it
// when the host dies is in the repository's hostdeath tests.)
func TestEphemeralNamespace(t *testing.T) {
	h, p, _ := hostileHost(t, "", Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d, err := p.Open(ctx, "throwaway", OpenOptions{Ephemeral: true})
	if err != nil {
		t.Fatal(err)
	}
	c, err := d.RunContainer(ctx, orchestra.Task{ID: "t", Command: []string{"echo", "hi"}})
	if err != nil {
		t.Fatal(err)
	}
	if st := waitStatus(t, c); st.ExitCode() != 0 {
		t.Fatalf("exit %d, want 0", st.ExitCode())
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if left, err := native.Leaks("throwaway"); err != nil || len(left) > 0 {
		t.Fatalf("after Close of an ephemeral namespace: %v (%v)", left, err)
	}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
}

package bench

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/jtarchie/pocketci/host"
	"github.com/jtarchie/pocketci/orchestra"
)

// TestFollowMatchesLogs: Logs with follow through the native plugin (each
// write sent at once) and without it afterwards (writes coalesced) give the
// same bytes, stdout and stderr apart, for many small writes and for output
// larger than a chunk.
func TestFollowMatchesLogs(t *testing.T) {
	ctx := context.Background()
	h, err := host.New(host.Config{Dirs: []string{pluginDir}, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	p, err := h.Plugin("native")
	if err != nil {
		t.Fatal(err)
	}
	d, err := p.Open(ctx, "follow", host.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	script := `for i in $(seq 1 300); do echo "out $i"; echo "err $i" >&2; done; head -c 3000000 /dev/zero | tr '\0' 'x'`
	c, err := d.RunContainer(ctx, orchestra.Task{ID: "t", Command: []string{"sh", "-c", script}})
	if err != nil {
		t.Fatal(err)
	}
	var fout, ferr bytes.Buffer
	if err := c.Logs(ctx, &fout, &ferr, true); err != nil {
		t.Fatal(err)
	}
	var lout, lerr bytes.Buffer
	if err := c.Logs(ctx, &lout, &lerr, false); err != nil {
		t.Fatal(err)
	}
	var wantOut, wantErr strings.Builder
	for i := 1; i <= 300; i++ {
		fmt.Fprintf(&wantOut, "out %d\n", i)
		fmt.Fprintf(&wantErr, "err %d\n", i)
	}
	wantOut.WriteString(strings.Repeat("x", 3000000))
	for _, got := range []struct {
		name     string
		out, err string
	}{{"Logs follow", fout.String(), ferr.String()}, {"Logs", lout.String(), lerr.String()}} {
		if got.out != wantOut.String() {
			t.Errorf("%s stdout: %d bytes, want %d (first difference at %d)", got.name, len(got.out), wantOut.Len(), firstDiff(got.out, wantOut.String()))
		}
		if got.err != wantErr.String() {
			t.Errorf("%s stderr: %q, want %d lines", got.name, got.err, 300)
		}
	}
}

func firstDiff(a, b string) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

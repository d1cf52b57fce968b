package wire

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"

	"github.com/jtarchie/pocketci/orchestra"
)

// peakRSS is the process's VmHWM in bytes; resetPeakRSS starts it over
// from the current RSS (Linux 4.0 and later).
func peakRSS(t *testing.T) int64 {
	t.Helper()
	f, err := os.Open("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.Fields(v)[0], 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmHWM in /proc/self/status")
	return 0
}

func resetPeakRSS(t *testing.T) {
	t.Helper()
	if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("cannot reset the peak RSS (CI runs as root on Linux, where it must work): %v", err)
		}
		t.Skipf("cannot reset the peak RSS here: %v", err)
	}
}

// TestVolumeDataMemoryIsBounded: 1 GiB copied into a volume and 1 GiB out
// of one, through the real client and server (one process here, so the
// figure is the host's and the plugin's together), raise the peak RSS by a
// few MiB, not by anything near the size.
func TestVolumeDataMemoryIsBounded(t *testing.T) {
	const size = 1 << 30
	vd := openLabelled(t, connect(t), "volumes").(orchestra.VolumeDataAccessor)
	ctx := context.Background()
	debug.FreeOSMemory()
	resetPeakRSS(t)
	before := peakRSS(t)
	if err := vd.CopyToVolume(ctx, "sink", &patternReader{left: size}); err != nil {
		t.Fatal(err)
	}
	rc, err := vd.CopyFromVolume(ctx, fmt.Sprintf("gen-%d", size))
	if err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(io.Discard, rc)
	rc.Close()
	if err != nil || n != size {
		t.Fatalf("read %d bytes (%v), want %d", n, err, size)
	}
	grew := peakRSS(t) - before
	t.Logf("peak RSS grew %.1f MiB moving 2 GiB", float64(grew)/(1<<20))
	if grew > 32<<20 {
		t.Fatalf("peak RSS grew %.1f MiB moving 1 GiB in and 1 GiB out: memory is not bounded", float64(grew)/(1<<20))
	}
}

package qemu

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jtarchie/pocketci/orchestra"
)

// lockedBuffer is a bytes.Buffer safe for a slog handler and a reader.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestKVMFailureRemembered: with a qemu whose KVM start fails (a wrapper
// that refuses -accel kvm) or never runs the guest (a wrapper that hangs,
// as this kind of host's /dev/kvm does), the first boot falls back to TCG,
// logs it once below Warn, and writes the memo; a second driver goes
// straight to TCG without trying KVM or logging it again.
func TestKVMFailureRemembered(t *testing.T) {
	for _, tt := range []struct{ name, kvm string }{
		{"refused", "echo 'fake: failed to initialize kvm' >&2; exit 1"},
		{"hangs", "exec sleep 3600"},
	} {
		t.Run(tt.name, func(t *testing.T) { testKVMFailureRemembered(t, tt.kvm) })
	}
}

func testKVMFailureRemembered(t *testing.T, kvmBehaviour string) {
	requireQEMU(t)
	defer func(old time.Duration) { kvmTrialTimeout = old }(kvmTrialTimeout)
	kvmTrialTimeout = 3 * time.Second
	if f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0); err != nil {
		t.Skipf("the auto accelerator only tries KVM when /dev/kvm opens: %v", err)
	} else {
		_ = f.Close()
	}
	real, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		t.Fatal(err)
	}
	kernel, initrd := ImagePaths()
	t.Setenv(EnvKernel, kernel)
	t.Setenv(EnvInitrd, initrd)
	t.Setenv(EnvGuestd, GuestdPath())
	t.Setenv("XDG_CACHE_HOME", t.TempDir()) // a fresh memo directory
	t.Setenv(EnvAccel, "auto")
	dir := t.TempDir()
	calls := filepath.Join(dir, "calls")
	wrapper := filepath.Join(dir, "qemu-system-x86_64")
	script := "#!/bin/sh\necho \"$*\" >>" + calls + "\n" +
		"case \" $* \" in *' -accel kvm '*) " + kvmBehaviour + ";; esac\n" +
		"exec " + real + " \"$@\"\n"
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv(EnvBinary, wrapper)

	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	kvmStarts := func() int {
		data, _ := os.ReadFile(calls)
		return strings.Count(string(data), "-accel kvm")
	}
	for i, want := range []struct {
		kvmStarts int
		logged    bool
	}{{1, true}, {1, false}} {
		var logs lockedBuffer
		d, err := New("qt-kvm-"+time.Now().Format("150405.000000"), Config{}, slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
		if err != nil {
			t.Fatal(err)
		}
		code, out, _ := runTask(t, ctx, d, orchestra.Task{ID: "a", Command: []string{"echo", "ok"}})
		if err := d.Close(); err != nil {
			t.Fatal(err)
		}
		if code != 0 || out != "ok\n" {
			t.Fatalf("driver %d: exit %d stdout %q; log:\n%s", i, code, out, logs.String())
		}
		if got := kvmStarts(); got != want.kvmStarts {
			t.Errorf("driver %d: %d KVM starts so far, want %d", i, got, want.kvmStarts)
		}
		text := logs.String()
		if got := strings.Contains(text, "KVM cannot boot"); got != want.logged {
			t.Errorf("driver %d: KVM failure logged %v, want %v:\n%s", i, got, want.logged, text)
		}
		for _, line := range strings.Split(text, "\n") {
			if strings.Contains(line, "KVM") && (strings.Contains(line, "level=WARN") || strings.Contains(line, "level=ERROR")) {
				t.Errorf("driver %d: KVM logged at warning level or above: %s", i, line)
			}
		}
	}
	memos, _ := filepath.Glob(filepath.Join(kvmMemoDir(), "broken-*"))
	if len(memos) != 1 {
		t.Fatalf("memo files %v, want one", memos)
	}
}

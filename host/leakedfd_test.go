package host

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// TestLeakedFDNeverReachesAPlugin: an fd the host's process inherited
// without close-on-exec (a careless parent) is not passed on to the plugins
// the host starts.
func TestLeakedFDNeverReachesAPlugin(t *testing.T) {
	leaked := filepath.Join(t.TempDir(), "leaked")
	fd, err := syscall.Open(leaked, syscall.O_CREAT|syscall.O_RDWR, 0o600) // no O_CLOEXEC, on purpose
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	dir := privateDir(t)
	install(t, dir, "leakcheck", 0o755)
	h, err := New(Config{Dirs: []string{dir}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	p, err := h.Plugin("leakcheck")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := p.Info(ctx); err != nil {
		t.Fatal(err)
	}
	fds := "/proc/" + strconv.Itoa(p.PID()) + "/fd"
	entries, err := os.ReadDir(fds)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if target, _ := os.Readlink(filepath.Join(fds, e.Name())); target == leaked {
			t.Fatalf("the plugin holds the host's leaked fd as its fd %s", e.Name())
		}
	}
}

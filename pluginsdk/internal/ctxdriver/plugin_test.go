package ctxdriver_test

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jtarchie/pocketci/host"
	"github.com/jtarchie/pocketci/orchestra"
	"github.com/jtarchie/pocketci/pluginsdk/internal/ctxdriver"
)

func init() {
	openers = append(openers, opener{"plugin", pluginOpener})
}

// pluginOpener starts the test binary as the fixture's plugin in a fresh
// host and returns how to open drivers in it.
func pluginOpener(t *testing.T) func(string) (orchestra.Driver, error) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, host.Prefix+ctxdriver.Name)
	if err := os.Link(self, bin); err != nil {
		data, rerr := os.ReadFile(self)
		if rerr != nil {
			t.Fatal(rerr)
		}
		if err := os.WriteFile(bin, data, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv(servePluginEnv, "1")
	h, err := host.New(host.Config{Dirs: []string{dir}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Close() })
	p, err := h.Plugin(ctxdriver.Name)
	if err != nil {
		t.Fatal(err)
	}
	provider := p.Provider()
	return func(ns string) (orchestra.Driver, error) { return provider.NewDriver(t.Context(), ns, nil, nil) }
}

// TestLargeTaskReachesThePlugin: a 10 MiB task crosses go-plugin's gRPC
// connection (whose default limit is 4 MiB) and reaches the driver, which
// refuses it for its own reason (the kernel's limit on one environment
// string), not gRPC's size error.
func TestLargeTaskReachesThePlugin(t *testing.T) {
	needRoot(t)
	d, err := pluginOpener(t)("large-task")
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	_, err = d.RunContainer(context.Background(), orchestra.Task{ID: "large", Command: []string{"true"}, Env: map[string]string{"BIG": strings.Repeat("x", 10<<20)}})
	if err == nil || !strings.Contains(err.Error(), "argument list too long") {
		t.Fatalf("RunContainer = %v, want the driver's exec error (E2BIG), which means the task reached it", err)
	}
}

package host

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jtarchie/pocketci/orchestra"
	"github.com/jtarchie/pocketci/orchestra/conformance"
	"github.com/jtarchie/pocketci/plugins/native"
)

// compat13Binary is the native plugin as released with SDK 0.1 (protocol
// 1.3), built from git by `make compat-fixture`.
const compat13Binary = "../bin/compat/pocketci-driver-native"

// compat13Plugin installs the protocol-1.3 native plugin in a private
// directory and returns a host for it. Without the binary the test fails in
// CI (CI=true, or ORCHESTRA_REQUIRE_DOCKER set, as `make test` runs it) and
// is skipped elsewhere, saying how to build it.
func compat13Plugin(t *testing.T) (*Host, *Plugin) {
	t.Helper()
	data, err := os.ReadFile(compat13Binary)
	if err != nil {
		msg := "the protocol-1.3 native plugin is not built (" + err.Error() + "): run `make compat-fixture` in the repository root"
		if os.Getenv("CI") == "true" || os.Getenv("ORCHESTRA_REQUIRE_DOCKER") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	dir := privateDir(t)
	if err := os.WriteFile(filepath.Join(dir, Prefix+"native"), data, 0o755); err != nil {
		t.Fatal(err)
	}
	h, err := New(Config{Dirs: []string{dir}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := h.Close(); err != nil {
			t.Errorf("host close: %v", err)
		}
	})
	p, err := h.Plugin("native")
	if err != nil {
		t.Fatal(err)
	}
	info, err := p.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if info.ProtocolVersion != "1.3" || info.SDKVersion != "0.1.0" {
		t.Fatalf("%s reports protocol %s, SDK %s; want the 1.3 release (SDK 0.1.0): rm -r bin/compat && make compat-fixture",
			compat13Binary, info.ProtocolVersion, info.SDKVersion)
	}
	return h, p
}

// TestProtocol13PluginConformance: a plugin built with SDK 0.1 and never
// rebuilt keeps serving under this host: the conformance suite passes
// through it, but for what protocol 1.3 cannot carry or the 0.1 native
// driver did not do.
func TestProtocol13PluginConformance(t *testing.T) {
	_, p := compat13Plugin(t)
	ctx := context.Background()
	conformance.Run(t, conformance.Options{
		New:   func(ns string) (orchestra.Driver, error) { return p.Open(ctx, ns, OpenOptions{}) },
		Leaks: native.Leaks, // the 0.1 driver keeps its namespaces where today's does: $POCKETCI_NATIVE_ROOT
		Skip: map[string]string{
			"workdir":                 "protocol 1.3 has no Task.WorkDir: the host refuses it (TestProtocol13PluginRefusesNewTaskFields)",
			"size and cpu kind hints": "protocol 1.3 has no Mount.SizeGB nor ContainerLimits.CPUKind: the host refuses them",
			"volume path":             "protocol 1.3 does not carry a volume's path: Volume.Path() is empty",
			"nested mounts":           "the 0.1 native driver refuses a mount inside another (it links volumes into the working directory)",
			"command not found":       "the 0.1 native driver fails RunContainer for a command not on PATH instead of exiting 127",
		},
	})
}

// TestProtocol13PluginRefusesNewTaskFields: a task field protocol 1.3 cannot
// carry is refused, naming the field, rather than dropped: the error wraps
// errors.ErrUnsupported and says to rebuild the plugin.
func TestProtocol13PluginRefusesNewTaskFields(t *testing.T) {
	_, p := compat13Plugin(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d, err := p.Open(ctx, "compat-fields", OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	tests := []struct {
		name, field string
		task        orchestra.Task
	}{
		{"workdir", "Task.WorkDir", orchestra.Task{ID: "wd", Command: []string{"pwd"}, WorkDir: "/tmp"}},
		{"cpu kind", "Task.ContainerLimits.CPUKind", orchestra.Task{ID: "kind", Command: []string{"true"},
			ContainerLimits: orchestra.ContainerLimits{CPUKind: "arm"}}},
		{"size", "Task.Mounts[0].SizeGB", orchestra.Task{ID: "size", Command: []string{"true"},
			Mounts: orchestra.Mounts{{Name: "sized", Path: "data", SizeGB: 1}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := d.RunContainer(ctx, tt.task)
			if err == nil {
				_ = c.Cleanup(ctx)
				t.Fatalf("RunContainer with %s through a 1.3 plugin: no error, want it refused", tt.field)
			}
			if !errors.Is(err, errors.ErrUnsupported) || !strings.Contains(err.Error(), tt.field) {
				t.Fatalf("RunContainer with %s: %v; want an error wrapping errors.ErrUnsupported naming %s", tt.field, err, tt.field)
			}
			t.Logf("%s: %v", tt.field, err)
		})
	}
	// A config is new in 1.4 too.
	_, err = p.Open(ctx, "compat-config", OpenOptions{Config: []byte(`{"root":"/tmp"}`)})
	if !errors.Is(err, errors.ErrUnsupported) || !strings.Contains(err.Error(), "config") {
		t.Fatalf("Open with a config through a 1.3 plugin: %v; want errors.ErrUnsupported naming the config", err)
	}
}

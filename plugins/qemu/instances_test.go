package qemu

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jtarchie/pocketci/orchestra"
	"github.com/jtarchie/pocketci/orchestra/conformance/testkit"
)

// TestConfig: the typed config decodes strictly, validates without quoting
// values, and two instances with different configs live side by side.
func TestConfig(t *testing.T) {
	p := Provider()
	tests := []struct {
		name, raw, wantField string
	}{
		{"empty", ``, ""},
		{"all fields", `{"image_dir":"/i","kernel":"/k","initrd":"/r","guestd":"/g","binary":"q","accel":"tcg","memory_mib":512,"cpus":2,"boot_timeout":"90s","snapshot":"off","image_cache":"/c","state_dir":"/s"}`, ""},
		{"unknown field", `{"memory":1}`, "memory"},
		{"bad accel", `{"accel":"secret-value"}`, "accel"},
		{"bad snapshot", `{"snapshot":"secret-value"}`, "snapshot"},
		{"negative memory", `{"memory_mib":-1}`, "memory_mib"},
		{"bad duration", `{"boot_timeout":"soon"}`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := p.UnmarshalConfig(json.RawMessage(tt.raw))
			invalid := tt.wantField != "" || tt.name == "bad duration"
			if !invalid {
				if err != nil {
					t.Fatalf("UnmarshalConfig: %v", err)
				}
				if cfg.DriverName() != "qemu" {
					t.Fatalf("DriverName %q", cfg.DriverName())
				}
				return
			}
			if !errors.Is(err, orchestra.ErrInvalidConfig) {
				t.Fatalf("UnmarshalConfig: %v, want ErrInvalidConfig", err)
			}
			if !strings.Contains(err.Error(), tt.wantField) || strings.Contains(err.Error(), "secret-value") {
				t.Fatalf("error %q: want it to name %q and not quote the value", err, tt.wantField)
			}
		})
	}

	// Two instances of one namespace with their own state directories.
	ctx := t.Context()
	var paths []string
	for _, dir := range []string{t.TempDir(), t.TempDir()} {
		d, err := p.NewDriver(ctx, "side-by-side", Config{StateDir: dir}, testLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		v, err := d.CreateVolume(ctx, "v", 0)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(v.Path(), dir+string(filepath.Separator)) {
			t.Fatalf("volume path %s is not under the instance's state_dir %s", v.Path(), dir)
		}
		paths = append(paths, v.Path())
		defer func() {
			if err := d.Close(); err != nil {
				t.Error(err)
			}
			if _, err := os.Stat(dir + "/" + "side-by-side"); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("after Close the namespace's directory is still there (%v)", err)
			}
		}()
	}
	if paths[0] == paths[1] {
		t.Fatalf("both instances use %s", paths[0])
	}
}

// TestAttachFromDisk: another instance finds a task by its directory alone
// (no VM): its recorded exit code, 137 when the instance that ran it is
// gone without one, and not found for an ID nobody ran.
func TestAttachFromDisk(t *testing.T) {
	ctx := t.Context()
	cfg := Config{StateDir: t.TempDir()}
	d, err := New("attach", cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.makeShare(); err != nil {
		t.Fatal(err)
	}
	mk := func(id, exit, stdout string) {
		dir := filepath.Join(d.share, "tasks", taskDirName("attach", id))
		files := map[string]string{lockFile: "", "stdout": stdout, "stderr": ""}
		if exit != "" {
			files[exitFile] = exit
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for name, data := range files {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	mk("finished", "3", "out\n")
	mk("orphan", "", "partial")
	for _, tt := range []struct {
		id, stdout string
		code       int
	}{{"finished", "out\n", 3}, {"orphan", "partial", 137}} {
		c, err := d.GetContainer(ctx, tt.id)
		if err != nil {
			t.Fatal(err)
		}
		st := testkit.MustWaitDone(t, c, taskTimeout)
		var out bytes.Buffer
		if err := c.Logs(ctx, &out, nil, true); err != nil {
			t.Fatal(err)
		}
		if st.ExitCode() != tt.code || out.String() != tt.stdout || c.ID() != tt.id {
			t.Fatalf("%s: exit %d stdout %q id %q, want %d and %q", tt.id, st.ExitCode(), out.String(), c.ID(), tt.code, tt.stdout)
		}
		// RunContainer of the same ID returns it and does not run it.
		again, err := d.RunContainer(ctx, orchestra.Task{ID: tt.id, Command: []string{"false"}})
		if err != nil || again != c {
			t.Fatalf("RunContainer(%s) again: %v, %v; want the attached container", tt.id, again, err)
		}
		if err := c.Cleanup(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := d.GetContainer(ctx, tt.id); !errors.Is(err, orchestra.ErrContainerNotFound) {
			t.Fatalf("after Cleanup: %v, want ErrContainerNotFound", err)
		}
	}
	for _, id := range []string{"never-ran", "", "a\x00b"} {
		if _, err := d.GetContainer(ctx, id); !errors.Is(err, orchestra.ErrContainerNotFound) {
			t.Fatalf("GetContainer(%q): %v, want ErrContainerNotFound", id, err)
		}
	}
}

// TestSecondInstance: a second instance of a namespace whose first one is
// not closed (the CLI releases it) finds the volumes with their files and
// the first one's tasks: finished ones with their output, a running one
// that its Cleanup stops through the first instance.
func TestSecondInstance(t *testing.T) {
	requireQEMU(t)
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	first, ns := newTestDriver(t)
	code, _, errs := runTask(t, ctx, first, orchestra.Task{ID: "writer", Mounts: orchestra.Mounts{{Name: "keep", Path: "data"}},
		Command: []string{"sh", "-c", "echo kept > data/f; echo wrote"}})
	if code != 0 {
		t.Fatalf("writer: exit %d stderr %q", code, errs)
	}
	sleeper, err := first.RunContainer(ctx, orchestra.Task{ID: "sleeper", Command: []string{"sh", "-c", "echo started; sleep 600"}})
	if err != nil {
		t.Fatal(err)
	}

	second, err := New(ns, Config{}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	// Closed before the first (deferred, the first's Close is a t.Cleanup):
	// it removes the namespace's directory, and the first's Close after it
	// still leaves nothing.
	defer second.Close()
	vol, err := second.CreateVolume(ctx, "keep", 0)
	if err != nil {
		t.Fatal(err)
	}
	if data, err := os.ReadFile(filepath.Join(vol.Path(), "f")); err != nil || string(data) != "kept\n" {
		t.Fatalf("the volume's file through the second instance: %q, %v", data, err)
	}
	w, err := second.GetContainer(ctx, "writer")
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if st := testkit.MustWaitDone(t, w, taskTimeout); st.ExitCode() != 0 {
		t.Fatalf("writer through the second instance: exit %d", st.ExitCode())
	}
	if err := w.Logs(ctx, &out, nil, false); err != nil || out.String() != "wrote\n" {
		t.Fatalf("writer's logs through the second instance: %q, %v", out.String(), err)
	}

	s, err := second.GetContainer(ctx, "sleeper")
	if err != nil {
		t.Fatal(err)
	}
	for {
		out.Reset()
		if err := s.Logs(ctx, &out, nil, false); err != nil {
			t.Fatal(err)
		}
		if out.String() == "started\n" {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if st, err := s.Status(ctx); err != nil || st.IsDone() {
		t.Fatalf("a running task through the second instance: %v, %v; want running", st, err)
	}
	if err := s.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	if st := testkit.MustWaitDone(t, sleeper, taskTimeout); st.ExitCode() != 137 {
		t.Fatalf("the first instance's sleeper after the second's Cleanup: exit %d, want 137", st.ExitCode())
	}

	// The second instance boots its own VM and reads the volume there.
	code, got, errs := runTask(t, ctx, second, orchestra.Task{ID: "reader", Mounts: orchestra.Mounts{{Name: "keep", Path: "in"}},
		Command: []string{"cat", "in/f"}})
	if code != 0 || got != "kept\n" {
		t.Fatalf("reader in the second instance: exit %d stdout %q stderr %q", code, got, errs)
	}
}

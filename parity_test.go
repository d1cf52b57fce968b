package pocketci_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jtarchie/pocketci/host"
	"github.com/jtarchie/pocketci/orchestra"
	"github.com/jtarchie/pocketci/orchestra/conformance/testkit"
	"github.com/jtarchie/pocketci/plugins/native"
)

// outcome is what a task gave: refused with an error, or its exit code and
// output.
type outcome struct {
	err    error
	code   int
	stdout string
	stderr string
}

func (o outcome) String() string {
	if o.err != nil {
		return "refused: " + o.err.Error()
	}
	return fmt.Sprintf("exit %d, stdout %q, stderr %q", o.code, o.stdout, o.stderr)
}

// runOutcome runs task on d to the end.
func runOutcome(ctx context.Context, d orchestra.Driver, task orchestra.Task) outcome {
	c, err := d.RunContainer(ctx, task)
	if err != nil {
		return outcome{err: err}
	}
	st, err := testkit.WaitDone(ctx, c)
	if err != nil {
		return outcome{err: err}
	}
	var out, errb bytes.Buffer
	if err := c.Logs(ctx, &out, &errb, false); err != nil {
		return outcome{err: fmt.Errorf("logs: %w", err)}
	}
	return outcome{code: st.ExitCode(), stdout: out.String(), stderr: errb.String()}
}

// TestParityInProcessAndPlugin runs each task of the table on native in
// process and on native through its plugin binary (bin/, via the host): both
// accept it with the same exit code and output, or both refuse it with the
// same error (the plugin's may add the context "plugin native: ..." in
// front of the very same text, and the same sentinel holds for errors.Is).
func TestParityInProcessAndPlugin(t *testing.T) {
	bin, err := filepath.Abs("bin")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(bin, host.Prefix+"native")); err != nil {
		t.Fatalf("bin/%snative missing: run make build first", host.Prefix)
	}
	t.Setenv(native.RootEnv, t.TempDir()) // the plugin inherits it
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	h, err := host.New(host.Config{Dirs: []string{bin}, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Close() })
	p, err := h.Plugin("native")
	if err != nil {
		t.Fatal(err)
	}
	suffix := fmt.Sprintf("%d", time.Now().UnixNano())
	drivers := map[string]orchestra.Driver{}
	for _, side := range []string{"in-process", "plugin"} {
		ns := "parity-" + side + "-" + suffix
		var d orchestra.Driver
		if side == "plugin" {
			d, err = p.Open(t.Context(), ns, host.OpenOptions{})
		} else {
			d, err = native.Provider().NewDriver(t.Context(), ns, nil, logger)
		}
		if err != nil {
			t.Fatalf("%s: new driver: %v", side, err)
		}
		drivers[side] = d
		t.Cleanup(func() {
			if err := d.Close(); err != nil {
				t.Errorf("%s: Close: %v", side, err)
			}
			if left, err := native.Leaks(ns); err != nil || len(left) > 0 {
				t.Errorf("%s: after Close: %v %v", side, left, err)
			}
		})
	}

	list := []string{"sh", "-c", "echo ok; ls -1"}
	task := func(id string, mounts ...orchestra.Mount) orchestra.Task {
		return orchestra.Task{ID: id, Command: list, Mounts: mounts}
	}
	tests := []struct {
		name   string
		task   orchestra.Task
		refuse error // the sentinel a refusal must wrap; nil: accepted
		code   int   // the exit code of an accepted task
	}{
		{"nanoid with leading underscore", task("_V1StGXR8_Z5jdHi6B-myT"), nil, 0},
		{"nanoid with leading dash", task("-V1StGXR8_Z5jdHi6B-myT"), nil, 0},
		{"spaces", task("build job / unit tests"), nil, 0},
		{"unicode", task("ünïcødé-日本語-✓"), nil, 0},
		{"over 200 bytes", task(strings.Repeat("long-id-", 30)), nil, 0},
		{"dot names", task(".."), nil, 0},
		{"relative mount", task("relative", orchestra.Mount{Name: "vol", Path: "repo/out"}), nil, 0},
		{"absolute mount", task("absolute", orchestra.Mount{Name: "vol", Path: "/data"}), nil, 0},
		{"env with empty value", orchestra.Task{ID: "env", Command: []string{"sh", "-c", "echo \"[$E]\""}, Env: map[string]string{"E": ""}}, nil, 0},
		{"empty ID", task(""), orchestra.ErrInvalidTask, 0},
		{"NUL in ID", task("a\x00b"), orchestra.ErrInvalidTask, 0},
		{"dot-dot mount", task("dotdot", orchestra.Mount{Name: "vol", Path: "a/../../etc"}), orchestra.ErrInvalidTask, 0},
		{"root mount", task("root", orchestra.Mount{Name: "vol", Path: "/"}), orchestra.ErrInvalidTask, 0},
		{"empty mount path", task("nopath", orchestra.Mount{Name: "vol", Path: ""}), orchestra.ErrInvalidTask, 0},
		{"empty volume name", task("novol", orchestra.Mount{Name: "", Path: "/v"}), orchestra.ErrInvalidTask, 0},
		{"same mount twice", task("twice", orchestra.Mount{Name: "a", Path: "/v"}, orchestra.Mount{Name: "b", Path: "/v/"}), orchestra.ErrInvalidTask, 0},
		{"nested mounts", task("nested", orchestra.Mount{Name: "a", Path: "/a"}, orchestra.Mount{Name: "b", Path: "/a/b"}), nil, 0},
		{"workdir in a relative mount", orchestra.Task{ID: "workdir", Command: list, WorkDir: "repo", Mounts: orchestra.Mounts{{Name: "vol", Path: "repo"}}}, nil, 0},
		{"size and cpu kind hints", orchestra.Task{ID: "hints", Command: list, Mounts: orchestra.Mounts{{Name: "sized", Path: "out", SizeGB: 1}},
			ContainerLimits: orchestra.ContainerLimits{CPUKind: "performance"}}, nil, 0},
		{"command not found", orchestra.Task{ID: "nocommand", Command: []string{"no-such-command-here"}}, nil, 127},
		{"empty command", orchestra.Task{ID: "nocmd"}, orchestra.ErrInvalidTask, 0},
		{"empty first argument", orchestra.Task{ID: "noarg", Command: []string{""}}, orchestra.ErrInvalidTask, 0},
		{"NUL in argument", orchestra.Task{ID: "nularg", Command: []string{"echo", "a\x00b"}}, orchestra.ErrInvalidTask, 0},
		{"= in env key", orchestra.Task{ID: "envkey", Command: list, Env: map[string]string{"A=B": "c"}}, orchestra.ErrInvalidTask, 0},
		{"empty env key", orchestra.Task{ID: "envempty", Command: list, Env: map[string]string{"": "c"}}, orchestra.ErrInvalidTask, 0},
		{"dot-dot workdir", orchestra.Task{ID: "workdirdotdot", Command: list, WorkDir: "a/../.."}, orchestra.ErrInvalidTask, 0},
		{"negative size", task("size", orchestra.Mount{Name: "vol", Path: "/v", SizeGB: -1}), orchestra.ErrInvalidTask, 0},
		{"cpu kind with a space", orchestra.Task{ID: "cpukind", Command: list, ContainerLimits: orchestra.ContainerLimits{CPUKind: "a b"}}, orchestra.ErrInvalidTask, 0},
		{"negative memory", orchestra.Task{ID: "mem", Command: list, ContainerLimits: orchestra.ContainerLimits{Memory: -1}}, orchestra.ErrInvalidTask, 0},
		{"unknown user", orchestra.Task{ID: "user", Command: list, User: "no-such-user-here"}, orchestra.ErrInvalidTask, 0},
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := runOutcome(ctx, drivers["in-process"], tt.task)
			pl := runOutcome(ctx, drivers["plugin"], tt.task)
			t.Logf("in process: %s", in)
			t.Logf("plugin:     %s", pl)
			if tt.refuse == nil {
				if in.err != nil || pl.err != nil {
					t.Fatalf("expected both sides to accept the task; in process %s; plugin %s", in, pl)
				}
				if in != pl || in.code != tt.code {
					t.Fatalf("the two sides differ (or failed): in process %s; plugin %s", in, pl)
				}
				return
			}
			if in.err == nil || pl.err == nil {
				t.Fatalf("expected both sides to refuse the task; in process %s; plugin %s", in, pl)
			}
			if !errors.Is(in.err, tt.refuse) || !errors.Is(pl.err, tt.refuse) {
				t.Fatalf("expected both refusals to wrap %v; in process %v; plugin %v", tt.refuse, in.err, pl.err)
			}
			if !strings.HasSuffix(pl.err.Error(), in.err.Error()) {
				t.Fatalf("the refusals differ: in process %q; plugin %q", in.err, pl.err)
			}
		})
	}
}

package qemu

import (
	"context"
	"log/slog"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jtarchie/pocketci/orchestra"
	"github.com/jtarchie/pocketci/orchestra/conformance/testkit"
)

// TestDeadVMIsRebooted kills the qemu process for real (SIGKILL, as the OOM
// killer or an operator would): the task running in it ends with 137, the
// next call boots a new VM that shares the same volumes (their data intact),
// and the log says so.
func TestDeadVMIsRebooted(t *testing.T) {
	ctx, d, logs := newLoggedTestDriver(t)

	mounts := orchestra.Mounts{{Name: "keep", Path: "data"}}
	if code, _, errs := runTask(t, ctx, d, orchestra.Task{ID: "write", Mounts: mounts, Command: []string{"sh", "-c", "echo kept > data/f"}}); code != 0 {
		t.Fatalf("write: exit %d stderr %q", code, errs)
	}
	running, err := d.RunContainer(ctx, orchestra.Task{ID: "running", Command: []string{"sleep", "600"}})
	if err != nil {
		t.Fatal(err)
	}
	old := d.vm
	if err := syscall.Kill(old.cmd.Process.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if st := testkit.MustWaitDone(t, running, taskTimeout); st.ExitCode() != 137 {
		t.Fatalf("the task in the killed VM: exit %d, want 137", st.ExitCode())
	}
	code, out, errs := runTask(t, ctx, d, orchestra.Task{ID: "read", Mounts: mounts, Command: []string{"cat", "data/f"}})
	if code != 0 || out != "kept\n" {
		t.Fatalf("after the reboot: exit %d stdout %q stderr %q, want the volume's data", code, out, errs)
	}
	if d.vm == old || !d.vm.alive() {
		t.Fatal("no new VM after the old one died")
	}
	if text := logs.String(); !strings.Contains(text, "the VM died; booting a new one") || !strings.Contains(text, "volumes=1") {
		t.Fatalf("the log does not say the VM was rebooted with its volume:\n%s", text)
	}
	// The finished task of the dead VM still has its output and can be cleaned up.
	if err := running.Cleanup(ctx); err != nil {
		t.Fatalf("Cleanup of a task of the dead VM: %v", err)
	}
}

// TestGuestDaemonRestarts kills the guest's task daemon for real (SIGKILL
// inside the guest): the task it was running ends with 255 at once and the
// log names the restart; what the task left running is killed by the new
// daemon; the next task runs on the restarted daemon in the same VM.
func TestGuestDaemonRestarts(t *testing.T) {
	ctx, d, logs := newLoggedTestDriver(t)

	running, err := d.RunContainer(ctx, orchestra.Task{ID: "running", Command: []string{"sh", "-c", "sleep 600 & sleep 600"}})
	if err != nil {
		t.Fatal(err)
	}
	vm := d.vm
	if err := vm.runOK(ctx, "kill the daemon", "sleep 0.2; killall -9 pocketci-guestd"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if st := testkit.MustWaitDone(t, running, taskTimeout); st.ExitCode() != 255 {
		t.Fatalf("the task of the killed daemon: exit %d, want 255", st.ExitCode())
	}
	t.Logf("the lost task ended %s after the kill", time.Since(start).Round(time.Millisecond))
	if text := logs.String(); !strings.Contains(text, "restarted") {
		t.Fatalf("the log does not name the daemon's restart:\n%s", text)
	}
	code, out, errs := runTask(t, ctx, d, orchestra.Task{ID: "after", Command: []string{"echo", "fine"}})
	if code != 0 || out != "fine\n" || d.vm != vm {
		t.Fatalf("after the restart: exit %d stdout %q stderr %q (same VM: %v)", code, out, errs, d.vm == vm)
	}
	_, left, _, err := vm.run(ctx, "cat /sys/fs/cgroup/slot-*/cgroup.procs | wc -l")
	if err != nil || strings.TrimSpace(left) != "0" {
		t.Fatalf("processes left in the task slots: %q %v", left, err)
	}
	if err := running.Cleanup(ctx); err != nil {
		t.Fatalf("Cleanup of the lost task: %v", err)
	}
}

// newLoggedTestDriver is a test driver whose Info log the test reads, and a
// context bounding the test.
func newLoggedTestDriver(t *testing.T) (context.Context, *Driver, *lockedBuffer) {
	t.Helper()
	requireQEMU(t)
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	t.Cleanup(cancel)
	d, _ := newTestDriver(t)
	logs := &lockedBuffer{}
	d.logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	return ctx, d, logs
}

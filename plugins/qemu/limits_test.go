package qemu

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jtarchie/pocketci/orchestra"
)

// TestLimits: memory and CPU limits are per task, through a cgroup of the
// task's own in the guest; a task over its memory limit is OOM-killed and
// exits 137, the VM and other tasks carry on, and no cgroup is left behind.
func TestLimits(t *testing.T) {
	requireQEMU(t)
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	d, _ := newTestDriver(t)
	const limit = 67108864
	tests := []struct {
		name   string
		limits orchestra.ContainerLimits
		cmd    string
		code   int
		out    string
	}{
		{"over the memory limit", orchestra.ContainerLimits{Memory: limit}, "dd if=/dev/zero of=/dev/null bs=96M count=1 2>/dev/null", 137, ""},
		{"within the memory limit", orchestra.ContainerLimits{Memory: limit}, "dd if=/dev/zero of=/dev/null bs=8M count=1 2>/dev/null; cat /sys/fs/cgroup$(cut -d: -f3 /proc/self/cgroup)/memory.max", 0, strconv.Itoa(limit) + "\n"},
		{"cpu shares", orchestra.ContainerLimits{CPU: 512}, "cat /sys/fs/cgroup$(cut -d: -f3 /proc/self/cgroup)/cpu.weight", 0, strconv.FormatInt(cpuWeight(512), 10) + "\n"},
		{"no limits: a cgroup without limits", orchestra.ContainerLimits{}, "cat /sys/fs/cgroup$(cut -d: -f3 /proc/self/cgroup)/memory.max", 0, "max\n"},
		{"the VM survives the OOM kill", orchestra.ContainerLimits{}, "echo alive", 0, "alive\n"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			code, out, errs := runTask(t, ctx, d, orchestra.Task{ID: "limits-" + strconv.Itoa(i), ContainerLimits: tt.limits, Command: []string{"sh", "-c", tt.cmd}})
			t.Logf("took %s", time.Since(start).Round(time.Millisecond))
			if code != tt.code || out != tt.out {
				t.Fatalf("exit %d stdout %q stderr %q, want %d and %q", code, out, errs, tt.code, tt.out)
			}
		})
	}
	t.Run("cleanup of a running limited task empties its cgroup", func(t *testing.T) {
		c, err := d.RunContainer(ctx, orchestra.Task{ID: "limits-running", ContainerLimits: orchestra.ContainerLimits{Memory: limit}, Command: []string{"sleep", "600"}})
		if err != nil {
			t.Fatal(err)
		}
		for { // wait until it is in its cgroup (the only task running)
			_, out, _, err := d.vm.run(ctx, "cat /sys/fs/cgroup/slot-"+strconv.Itoa(c.(*Container).slot)+"/memory.max 2>/dev/null; true")
			if err != nil {
				t.Fatal(err)
			}
			if strings.TrimSpace(out) == strconv.Itoa(limit) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if err := c.Cleanup(ctx); err != nil {
			t.Fatal(err)
		}
		_, out, _, err := d.vm.run(ctx, "cat /sys/fs/cgroup/slot-*/cgroup.procs; true")
		if err != nil || strings.TrimSpace(out) != "" {
			t.Fatalf("processes left in task cgroups after the tasks ended: %q %v", out, err)
		}
	})
}

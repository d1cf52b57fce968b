package qemu

import (
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/jtarchie/pocketci/orchestra"
	"github.com/jtarchie/pocketci/plugins/qemu/qga"
)

// The notes' figures (qemu-guest-notes.md, same kind of machine, TCG): first
// guest-ping 2.2-2.8 s after qemu starts; a guest-exec of echo ~23 ms with a
// 5 ms poll. Each benchmark also reports its baseline measured in the same
// run, so a busy host shows up in both numbers.

// BenchmarkColdBoot measures a new driver's first task (boot, exec, done,
// logs) and reports the raw boot-to-agent time of the same VM beside it.
func BenchmarkColdBoot(b *testing.B) {
	requireQEMU(b)
	ctx := context.Background()
	var firstTask, toAgent, raw time.Duration
	for range b.N {
		raw += rawBoot(b) // baseline, interleaved
		drv, err := New("bench-cold-"+time.Now().Format("150405.000000"), testLogger(b))
		if err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		c, err := drv.RunContainer(ctx, orchestra.Task{ID: "t", Command: []string{"echo", "hello"}})
		if err != nil {
			b.Fatal(err)
		}
		ready := time.Now()
		waitDone(b, ctx, c)
		if err := c.Logs(ctx, io.Discard, io.Discard); err != nil {
			b.Fatal(err)
		}
		firstTask += time.Since(start)
		toAgent += ready.Sub(start)
		if err := drv.Close(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(firstTask.Milliseconds())/float64(b.N), "ms/first-task")
	b.ReportMetric(float64(toAgent.Milliseconds())/float64(b.N), "ms/boot-to-agent")
	b.ReportMetric(float64(raw.Milliseconds())/float64(b.N), "ms/raw-boot")
	b.Logf("cold: first task done %.0f ms after RunContainer (driver boot to agent sync %.0f ms); baseline raw qemu to first sync %.0f ms in the same run; notes: 2200-2800 ms",
		float64(firstTask.Milliseconds())/float64(b.N), float64(toAgent.Milliseconds())/float64(b.N), float64(raw.Milliseconds())/float64(b.N))
}

// BenchmarkWarmEcho measures one `echo hello` task on a booted VM through
// the driver (RunContainer, poll, Logs) and, as the baseline, a bare
// guest-exec of /bin/echo on a second agent-level loop in the same VM.
func BenchmarkWarmEcho(b *testing.B) {
	requireQEMU(b)
	ctx := context.Background()
	drv, err := New("bench-warm-"+time.Now().Format("150405.000000"), testLogger(b))
	if err != nil {
		b.Fatal(err)
	}
	d := drv.(*Driver)
	defer d.Close()
	if _, err := d.CreateVolume(ctx, "boot", 0); err != nil {
		b.Fatal(err)
	}
	// Baseline: raw guest-exec + status at 5 ms, as in the notes.
	const rawRuns = 20
	rawStart := time.Now()
	for range rawRuns {
		pid, err := d.vm.agent.Exec(ctx, qga.ExecRequest{Path: "/bin/echo", Args: []string{"hello"}, CaptureOutput: true})
		if err != nil {
			b.Fatal(err)
		}
		for {
			st, err := d.vm.agent.ExecStatus(ctx, pid)
			if err != nil {
				b.Fatal(err)
			}
			if st.Exited {
				break
			}
			time.Sleep(pollFast)
		}
	}
	raw := time.Since(rawStart) / rawRuns

	b.ResetTimer()
	for i := range b.N {
		c, err := d.RunContainer(ctx, orchestra.Task{ID: "echo-" + itoa(i), Command: []string{"echo", "hello"}})
		if err != nil {
			b.Fatal(err)
		}
		waitDone(b, ctx, c)
		if err := c.Logs(ctx, io.Discard, io.Discard); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	per := b.Elapsed() / time.Duration(b.N)
	b.ReportMetric(float64(raw.Microseconds())/1000, "ms/raw-guest-exec")
	b.Logf("warm: echo task %.1f ms through the driver; raw guest-exec of /bin/echo %.1f ms (notes: ~23 ms)",
		float64(per.Microseconds())/1000, float64(raw.Microseconds())/1000)
}

func itoa(i int) string { return strconv.Itoa(i) }

// rawBoot boots the notes' recipe by hand (no driver) and returns the time
// from process start to the first answered guest-sync-delimited.
func rawBoot(b *testing.B) time.Duration {
	b.Helper()
	dir, err := os.MkdirTemp("", "pocketci-qemu-rawbench-")
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(dir)
	kernel, initrd := ImagePaths()
	khz, err := hostTSCkHz()
	if err != nil {
		b.Fatal(err)
	}
	sock := filepath.Join(dir, "qga.sock")
	cmd := exec.Command("qemu-system-x86_64", "-nodefaults", "-no-user-config", "-display", "none",
		"-M", "microvm,x-option-roms=off", "-accel", "tcg", "-cpu", "max", "-smp", "1", "-m", "256",
		"-kernel", kernel, "-initrd", initrd,
		"-append", "console=ttyS0 quiet panic=-1 tsc_early_khz="+strconv.Itoa(khz)+" mitigations=off 8250.nr_uarts=1 pci=off audit=0 cryptomgr.notests random.trust_cpu=on no_timer_check",
		"-serial", "file:"+filepath.Join(dir, "console.log"), "-no-reboot",
		"-chardev", "socket,id=qga0,path="+sock+",server=on,wait=off",
		"-device", "virtio-serial-device", "-device", "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0",
		"-fsdev", "local,id=fs0,path="+dir+",security_model=none", "-device", "virtio-9p-device,fsdev=fs0,mount_tag=share")
	start := time.Now()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var c *qga.Client
	for c == nil {
		if c, err = qga.Dial(ctx, sock); err != nil {
			if ctx.Err() != nil {
				b.Fatal(err)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	defer c.Close()
	if err := c.Sync(ctx); err != nil {
		b.Fatal(err)
	}
	return time.Since(start)
}

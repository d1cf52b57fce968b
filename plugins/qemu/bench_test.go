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
	"github.com/jtarchie/pocketci/orchestra/conformance/testkit"
	"github.com/jtarchie/pocketci/plugins/qemu/qga"
)

// The notes' figures (qemu-guest-notes.md, same kind of machine, TCG): first
// guest-ping 2.2-2.8 s after qemu starts; a guest-exec of echo ~23 ms with a
// 5 ms poll. Each benchmark also reports its baseline measured in the same
// run, so a busy host shows up in both numbers.

// BenchmarkQemuColdTask ("qemu cold task") measures a new driver's first
// task, end to end (boot, which restores the host's boot snapshot, exec,
// done, logs), beside its baseline measured in the same run and
// interleaved: a bare boot of the same guest to its first agent answer.
// Target: ratio <= 0.5.
func BenchmarkQemuColdTask(b *testing.B) {
	requireQEMU(b)
	ctx := context.Background()
	coldTask := func() time.Duration {
		drv, err := New("bench-cold-"+time.Now().Format("150405.000000"), Config{}, testLogger(b))
		if err != nil {
			b.Fatal(err)
		}
		defer drv.Close()
		start := time.Now()
		c, err := drv.RunContainer(ctx, orchestra.Task{ID: "t", Command: []string{"echo", "hello"}})
		if err != nil {
			b.Fatal(err)
		}
		testkit.MustWaitDone(b, c, taskTimeout)
		if err := c.Logs(ctx, io.Discard, io.Discard, false); err != nil {
			b.Fatal(err)
		}
		return time.Since(start)
	}
	coldTask() // saves the boot snapshot when the host has none yet
	var task, bare time.Duration
	b.ResetTimer()
	for range b.N {
		bare += rawBoot(b)
		task += coldTask()
	}
	b.StopTimer()
	report(b, "cold-task", task, "bare-boot", bare)
}

// BenchmarkQemuWarmEcho ("qemu warm echo") measures one `echo hello` task
// on a booted VM through the driver (RunContainer, poll, Logs) beside its
// baseline measured in the same run and interleaved: a bare guest-exec of
// /bin/echo with captured output, polled at the same 5 ms. Target: ratio
// <= 1.5.
func BenchmarkQemuWarmEcho(b *testing.B) {
	requireQEMU(b)
	ctx := context.Background()
	drv, err := New("bench-warm-"+time.Now().Format("150405.000000"), Config{}, testLogger(b))
	if err != nil {
		b.Fatal(err)
	}
	d := drv
	defer d.Close()
	if _, err := d.ensureVM(ctx); err != nil {
		b.Fatal(err)
	}
	bareExec := func() time.Duration {
		start := time.Now()
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
				return time.Since(start)
			}
			time.Sleep(pollFast)
		}
	}
	n := 0
	echo := func() time.Duration {
		n++
		start := time.Now()
		c, err := d.RunContainer(ctx, orchestra.Task{ID: "echo-" + itoa(n), Command: []string{"echo", "hello"}})
		if err != nil {
			b.Fatal(err)
		}
		testkit.MustWaitDone(b, c, taskTimeout)
		if err := c.Logs(ctx, io.Discard, io.Discard, false); err != nil {
			b.Fatal(err)
		}
		took := time.Since(start)
		if err := c.Cleanup(ctx); err != nil {
			b.Fatal(err)
		}
		return took
	}
	for range 3 { // warm TCG's code cache for both paths
		bareExec()
		echo()
	}
	var task, bare time.Duration
	b.ResetTimer()
	for range b.N {
		bare += bareExec()
		task += echo()
	}
	b.StopTimer()
	report(b, "warm-echo", task, "bare-guest-exec", bare)
}

// report gives the measured and baseline times per run and their ratio.
func report(b *testing.B, name string, measured time.Duration, baseName string, baseline time.Duration) {
	per := float64(measured.Microseconds()) / 1000 / float64(b.N)
	base := float64(baseline.Microseconds()) / 1000 / float64(b.N)
	b.ReportMetric(per, "ms/"+name)
	b.ReportMetric(base, "ms/"+baseName)
	b.ReportMetric(per/base, "ratio")
	b.Logf("%s %.1f ms, baseline %s %.1f ms in the same run: ratio %.2f", name, per, baseName, base, per/base)
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

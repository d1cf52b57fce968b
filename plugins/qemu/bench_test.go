package qemu

import (
	"context"
	"io"
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
	var firstTask, toAgent time.Duration
	for range b.N {
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
	b.Logf("cold: first task done %.0f ms after RunContainer (boot to agent sync %.0f ms); notes: 2200-2800 ms to first ping",
		float64(firstTask.Milliseconds())/float64(b.N), float64(toAgent.Milliseconds())/float64(b.N))
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

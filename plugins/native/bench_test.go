//go:build linux

package native

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/jtarchie/pocketci/orchestra"
	"github.com/jtarchie/pocketci/plugins/native/internal/shim"
)

// BenchmarkRunTrue measures one task from RunContainer to done with its logs
// read, beside the baseline of exec.Command("true").Run() in the same run,
// and the cost of the descendant-killing shim alone: "true" run through the
// shim (the subreaper re-exec of the driver's binary) with exec.Command.
// Both exec cases also report cpu-ns/op, the CPU time of the process tree.
func BenchmarkRunTrue(b *testing.B) {
	b.Run("baseline-exec", func(b *testing.B) {
		var cpu time.Duration
		for b.Loop() {
			cmd := exec.Command("true")
			if err := cmd.Run(); err != nil {
				b.Fatal(err)
			}
			cpu += cpuTime(cmd)
		}
		b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/op")
	})
	b.Run("exec-through-shim", func(b *testing.B) {
		truePath, err := exec.LookPath("true")
		if err != nil {
			b.Fatal(err)
		}
		var cpu time.Duration
		for b.Loop() {
			ctlR, ctlW, err := os.Pipe()
			if err != nil {
				b.Fatal(err)
			}
			killR, killW, err := os.Pipe()
			if err != nil {
				b.Fatal(err)
			}
			argv, env := shim.Args(shim.Spec{Path: truePath, Args: []string{"true"}, Dir: "/", UID: -1, GID: -1})
			cmd := &exec.Cmd{Path: "/proc/self/exe", Args: argv, Env: env, ExtraFiles: []*os.File{ctlW, ctlW, killR}}
			err = cmd.Run()
			for _, f := range []*os.File{ctlR, ctlW, killR, killW} {
				_ = f.Close()
			}
			if err != nil {
				b.Fatal(err)
			}
			cpu += cpuTime(cmd)
		}
		b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/op")
	})
	b.Run("native", func(b *testing.B) {
		b.Setenv(RootEnv, b.TempDir())
		d, err := open("bench", nil)
		if err != nil {
			b.Fatal(err)
		}
		defer d.Close()
		i := 0
		for b.Loop() {
			i++
			c, err := d.RunContainer(b.Context(), orchestra.Task{ID: fmt.Sprint(i), Command: []string{"true"}})
			if err != nil {
				b.Fatal(err)
			}
			<-c.(*Container).done
			var out, errb bytes.Buffer
			if err := c.Logs(b.Context(), &out, &errb, false); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// cpuTime is the user and system time cmd and the children it waited for
// used: on a loaded machine wall time is mostly waiting for a CPU, this is
// the work.
func cpuTime(cmd *exec.Cmd) time.Duration {
	return cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
}

// BenchmarkLargeOutput measures 8 MiB of stdout through the driver (write to
// the log file, read back with Logs) beside the baseline of the same command
// with its stdout read straight from a pipe.
func BenchmarkLargeOutput(b *testing.B) {
	const size = 8 << 20
	cmd := fmt.Sprintf("head -c %d /dev/zero", size)
	b.Run("baseline-exec", func(b *testing.B) {
		b.SetBytes(size)
		for b.Loop() {
			out, err := exec.Command("sh", "-c", cmd).Output()
			if err != nil || len(out) != size {
				b.Fatalf("got %d bytes, %v", len(out), err)
			}
		}
	})
	b.Run("native", func(b *testing.B) {
		b.SetBytes(size)
		b.Setenv(RootEnv, b.TempDir())
		d, err := open("bench", nil)
		if err != nil {
			b.Fatal(err)
		}
		defer d.Close()
		i := 0
		for b.Loop() {
			i++
			c, err := d.RunContainer(b.Context(), orchestra.Task{ID: fmt.Sprint(i), Command: []string{"sh", "-c", cmd}})
			if err != nil {
				b.Fatal(err)
			}
			<-c.(*Container).done
			var out, errb bytes.Buffer
			if err := c.Logs(b.Context(), &out, &errb, false); err != nil || out.Len() != size {
				b.Fatalf("got %d bytes, %v", out.Len(), err)
			}
			_ = c.Cleanup(b.Context())
		}
	})
}

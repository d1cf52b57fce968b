package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime/debug"
	"strconv"
	"sync"
	"testing"

	"github.com/jtarchie/pocketci/host"
	"github.com/jtarchie/pocketci/orchestra"
	"github.com/jtarchie/pocketci/plugins/native"
)

// Every benchmark here has two halves run back to back in the same process:
// "baseline" and "plugin". scripts/bench.sh pairs them into a ratio.

const streamSize = 256 << 20

// BenchmarkColdStart: a plugin process started to its first answered call.
// Baseline: the minimal go-plugin gRPC plugin, started and pinged. Plugin:
// a fresh host starting the native plugin and answering Info.
func BenchmarkColdStart(b *testing.B) {
	ctx := context.Background()
	b.Run("baseline", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			client, _, err := startMin(ctx)
			if err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			client.Kill()
			b.StartTimer()
		}
	})
	cold := func(name string) func(b *testing.B) {
		return func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				h, err := host.New(host.Config{Dirs: []string{pluginDir}, Logger: quiet})
				if err != nil {
					b.Fatal(err)
				}
				p, err := h.Plugin(name)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := p.Info(ctx); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				if err := h.Close(); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
		}
	}
	b.Run("plugin", cold("native"))
	// The same through the in-memory fixture plugin: what the SDK costs
	// without the native driver's package and binary.
	b.Run("plugin-mem", cold("mem"))
}

// BenchmarkNewDriver: opening a driver on a running plugin. Baseline: one
// unary call (Info) to the same plugin binary.
func BenchmarkNewDriver(b *testing.B) {
	ctx := context.Background()
	b.Run("baseline", func(b *testing.B) {
		rpc := startSDK(b, pluginDir+"/pocketci-driver-native")
		for b.Loop() {
			if _, err := rpc.Info(ctx, nil); err != nil {
				b.Fatal(err)
			}
		}
	})
	open := func(name string) func(b *testing.B) {
		return func(b *testing.B) {
			h := newHost(b)
			p, err := h.Plugin(name)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := p.Info(ctx); err != nil {
				b.Fatal(err)
			}
			var drivers []orchestra.Driver
			for b.Loop() {
				d, err := p.NewDriver("nd-"+strconv.Itoa(len(drivers)), quiet)
				if err != nil {
					b.Fatal(err)
				}
				drivers = append(drivers, d)
			}
			for _, d := range drivers {
				if err := d.Close(); err != nil {
					b.Fatal(err)
				}
			}
		}
	}
	b.Run("plugin", open("native"))
	// The same through the in-memory fixture plugin, whose init does
	// nothing: the boundary's share without the native driver's init
	// (which creates the namespace directory).
	b.Run("plugin-mem", open("mem"))
	// The native driver's init alone, in process: its share of "plugin".
	b.Run("native-init-inprocess", func(b *testing.B) {
		var drivers []orchestra.Driver
		for b.Loop() {
			d, err := native.New("ndi-"+strconv.Itoa(len(drivers)), quiet)
			if err != nil {
				b.Fatal(err)
			}
			drivers = append(drivers, d)
		}
		for _, d := range drivers {
			_ = d.Close()
		}
	})
}

// startDone runs `true` on d and waits until it is done.
func startDone(b *testing.B, d orchestra.Driver) orchestra.Container {
	b.Helper()
	ctx := context.Background()
	c, err := d.RunContainer(ctx, orchestra.Task{ID: "done", Command: []string{"true"}})
	if err != nil {
		b.Fatal(err)
	}
	if err := c.(orchestra.LogFollower).FollowLogs(ctx, &counter{}, &counter{}); err != nil {
		b.Fatal(err)
	}
	return c
}

// BenchmarkStatusDone: Status of a finished container. Baseline: the native
// driver in process.
func BenchmarkStatusDone(b *testing.B) {
	ctx := context.Background()
	loop := func(b *testing.B, c orchestra.Container) {
		for b.Loop() {
			st, err := c.Status(ctx)
			if err != nil || !st.IsDone() {
				b.Fatalf("status %v, %v", st, err)
			}
		}
	}
	b.Run("baseline", func(b *testing.B) {
		loop(b, startDone(b, nativeDriver(b, "sd-base")))
	})
	b.Run("plugin", func(b *testing.B) {
		_, d := pluginDriver(b, newHost(b), "native", "sd-plugin")
		loop(b, startDone(b, d))
	})
}

// BenchmarkStatusRunning: Status of a running container through the plugin.
// Baseline: one unary call to the minimal go-plugin plugin.
func BenchmarkStatusRunning(b *testing.B) {
	ctx := context.Background()
	b.Run("baseline", func(b *testing.B) {
		client, conn, err := startMin(ctx)
		if err != nil {
			b.Fatal(err)
		}
		defer client.Kill()
		for b.Loop() {
			if err := ping(ctx, conn); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("plugin", func(b *testing.B) {
		_, d := pluginDriver(b, newHost(b), "native", "sr-plugin")
		c, err := d.RunContainer(ctx, orchestra.Task{ID: "sleep", Command: []string{"sleep", "600"}})
		if err != nil {
			b.Fatal(err)
		}
		defer c.Cleanup(ctx)
		for b.Loop() {
			st, err := c.Status(ctx)
			if err != nil || st.IsDone() {
				b.Fatalf("status %v, %v", st, err)
			}
		}
	})
}

// startMem starts the mem plugin, whose process serves the raw socket.
func startMem(b *testing.B) {
	b.Helper()
	p, err := newHost(b).Plugin("mem")
	if err != nil {
		b.Fatal(err)
	}
	if _, err := p.Info(context.Background()); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkLogs256MiB: 256 MiB of output through Logs from the in-memory
// plugin, written in 32 KiB writes. Baseline: the same bytes, written the
// same way by the same process, over a raw unix socket.
func BenchmarkLogs256MiB(b *testing.B) {
	const write = 32 << 10
	b.Run("baseline", func(b *testing.B) {
		startMem(b)
		b.SetBytes(streamSize)
		buf := make([]byte, 1<<20)
		for b.Loop() {
			if err := rawCopy('r', streamSize, write, buf); err != nil {
				b.Fatal(err)
			}
		}
	})
	// The ceiling: a bare gRPC server stream of 1 MiB messages from the
	// minimal go-plugin plugin, go-plugin's default options.
	b.Run("grpc-ceiling", func(b *testing.B) {
		ctx := context.Background()
		client, conn, err := startMin(ctx)
		if err != nil {
			b.Fatal(err)
		}
		defer client.Kill()
		b.SetBytes(streamSize)
		for b.Loop() {
			if err := grpcSource(ctx, conn, streamSize); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("plugin", func(b *testing.B) {
		ctx := context.Background()
		_, d := pluginDriver(b, newHost(b), "mem", "logs")
		c, err := d.RunContainer(ctx, orchestra.Task{ID: "logs", Command: []string{"logs", strconv.Itoa(streamSize), strconv.Itoa(write)}})
		if err != nil {
			b.Fatal(err)
		}
		b.SetBytes(streamSize)
		for b.Loop() {
			var out, errb counter
			if err := c.Logs(ctx, &out, &errb); err != nil || out.n != streamSize {
				b.Fatalf("got %d bytes, %v", out.n, err)
			}
		}
	})
}

// BenchmarkStdin256MiB: 256 MiB of stdin into a task of the in-memory plugin
// that discards it, until the task saw the end. Baseline: the same bytes,
// from the same reader, over a raw unix socket to the same process.
func BenchmarkStdin256MiB(b *testing.B) {
	const chunk = 1 << 20
	b.Run("baseline", func(b *testing.B) {
		startMem(b)
		b.SetBytes(streamSize)
		buf := make([]byte, chunk)
		for b.Loop() {
			if err := rawCopy('w', streamSize, chunk, buf); err != nil {
				b.Fatal(err)
			}
		}
	})
	// The ceiling: a bare gRPC client stream of 1 MiB messages, from the
	// same reader, to the minimal go-plugin plugin.
	b.Run("grpc-ceiling", func(b *testing.B) {
		ctx := context.Background()
		client, conn, err := startMin(ctx)
		if err != nil {
			b.Fatal(err)
		}
		defer client.Kill()
		b.SetBytes(streamSize)
		buf := make([]byte, chunk)
		for b.Loop() {
			if err := grpcSink(ctx, conn, &pattern{left: streamSize, buf: make([]byte, chunk)}, buf, streamSize); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("plugin", func(b *testing.B) {
		ctx := context.Background()
		_, d := pluginDriver(b, newHost(b), "mem", "stdin")
		b.SetBytes(streamSize)
		src := make([]byte, chunk)
		i := 0
		for b.Loop() {
			i++
			c, err := d.RunContainer(ctx, orchestra.Task{
				ID:      "stdin-" + strconv.Itoa(i),
				Command: []string{"stdin", strconv.Itoa(streamSize)},
				Stdin:   &pattern{left: streamSize, buf: src},
			})
			if err != nil {
				b.Fatal(err)
			}
			if err := c.(orchestra.LogFollower).FollowLogs(ctx, &counter{}, &counter{}); err != nil {
				b.Fatal(err)
			}
			st, err := c.Status(ctx)
			if err != nil || !st.IsDone() || st.ExitCode() != 0 {
				b.Fatalf("status %v, %v", st, err)
			}
		}
	})
}

// BenchmarkEchoNative: `echo hello` end to end (run, follow, status, check,
// cleanup). Baseline: the native driver in process.
func BenchmarkEchoNative(b *testing.B) {
	ctx := context.Background()
	loop := func(b *testing.B, d orchestra.Driver) {
		i := 0
		for b.Loop() {
			i++
			if err := runEcho(ctx, d, "echo-"+strconv.Itoa(i), ""); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("baseline", func(b *testing.B) { loop(b, nativeDriver(b, "echo-base")) })
	b.Run("plugin", func(b *testing.B) {
		_, d := pluginDriver(b, newHost(b), "native", "echo-plugin")
		loop(b, d)
	})
}

// BenchmarkEchoDocker: `echo hello` end to end through the docker plugin.
// Baseline: `docker run --rm busybox echo hello`.
func BenchmarkEchoDocker(b *testing.B) {
	ctx := context.Background()
	b.Run("baseline", func(b *testing.B) {
		requireDocker(b)
		for b.Loop() {
			out, err := exec.Command("docker", "run", "--rm", "busybox", "echo", "hello").Output()
			if err != nil || string(out) != "hello\n" {
				b.Fatalf("docker run: %q, %v", out, err)
			}
		}
	})
	b.Run("plugin", func(b *testing.B) {
		path := requireDocker(b)
		h := newHost(b)
		p, err := h.Load(path)
		if err != nil {
			b.Fatal(err)
		}
		d, err := p.NewDriver(fmt.Sprintf("bench-%d", os.Getpid()), quiet)
		if err != nil {
			b.Fatal(err)
		}
		defer d.Close()
		i := 0
		for b.Loop() {
			i++
			if err := runEcho(ctx, d, "echo-"+strconv.Itoa(i), "busybox"); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkTasks500: 500 `echo hello` tasks, 50 at a time, end to end.
// Baseline: the native driver in process. Peak RSS of the host (this
// process, peak reset before the run) and of the plugin process is reported.
func BenchmarkTasks500(b *testing.B) {
	const tasks, parallel = 500, 50
	ctx := context.Background()
	loop := func(b *testing.B, d orchestra.Driver) {
		round := 0
		for b.Loop() {
			round++
			var wg sync.WaitGroup
			sem := make(chan struct{}, parallel)
			errs := make(chan error, tasks)
			for i := range tasks {
				sem <- struct{}{}
				wg.Add(1)
				go func() {
					defer wg.Done()
					defer func() { <-sem }()
					if err := runEcho(ctx, d, fmt.Sprintf("t%d-%d", round, i), ""); err != nil {
						errs <- err
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				b.Fatal(err)
			}
		}
	}
	hostPeak := func(b *testing.B) func() {
		debug.FreeOSMemory()
		if err := resetHWM(); err != nil {
			b.Logf("cannot reset peak RSS: %v", err)
		}
		return func() {
			if kb, err := vmHWM("self"); err == nil {
				b.ReportMetric(kb/1024, "host-peak-MiB")
			}
		}
	}
	b.Run("baseline", func(b *testing.B) {
		d := nativeDriver(b, "t500-base")
		report := hostPeak(b)
		loop(b, d)
		report()
	})
	b.Run("plugin", func(b *testing.B) {
		p, d := pluginDriver(b, newHost(b), "native", "t500-plugin")
		report := hostPeak(b)
		loop(b, d)
		report()
		if kb, err := vmHWM(strconv.Itoa(p.PID())); err == nil {
			b.ReportMetric(kb/1024, "plugin-peak-MiB")
		} else {
			b.Error(err)
		}
	})
}

package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"runtime/debug"
	"strconv"
	"sync"
	"testing"

	"github.com/jtarchie/pocketci/host"
	"github.com/jtarchie/pocketci/internal/wire"
	"github.com/jtarchie/pocketci/orchestra"
	"github.com/jtarchie/pocketci/plugins/native"
	"github.com/jtarchie/pocketci/pluginsdk"
	"github.com/jtarchie/pocketci/proto/driverv1"
)

// Every benchmark here measures "baseline" and "plugin" in the same process:
// interleaved within each iteration (see interleave) where a run takes
// milliseconds, back to back as sub-benchmarks where it takes microseconds.
// scripts/bench.sh pairs them into a ratio.

const streamSize = 256 << 20

// BenchmarkColdStart: a plugin process started to its first answered call.
// Baseline: the minimal go-plugin gRPC plugin, started and pinged. Plugin:
// a fresh host starting the native plugin and answering Info; plugin-mem:
// the same with the in-memory fixture plugin (the SDK without the native
// driver). Stopping the process is not timed.
func BenchmarkColdStart(b *testing.B) {
	ctx := context.Background()
	cold := func(name string) func() (func(), error) {
		return func() (func(), error) {
			h, err := host.New(host.Config{Dirs: []string{pluginDir}, Logger: quiet})
			if err != nil {
				return nil, err
			}
			undo := func() { _ = h.Close() }
			p, err := h.Plugin(name)
			if err != nil {
				return undo, err
			}
			_, err = p.Info(ctx)
			return undo, err
		}
	}
	b.Run("interleaved", func(b *testing.B) {
		interleave(b, 0,
			step{"baseline", func() (func(), error) {
				client, _, err := startMin(ctx)
				if err != nil {
					return nil, err
				}
				return client.Kill, nil
			}},
			step{"plugin", cold("native")},
			step{"plugin-mem", cold("mem")},
		)
	})
}

// BenchmarkNewDriver: opening a driver on a running plugin. Baseline: one
// unary call (Info) to the same plugin binary. plugin: Open on the native
// plugin; plugin-mem: Open on the in-memory fixture plugin, whose driver
// does nothing (the boundary's share). native-open-inprocess: the plugin
// side of Open for the native driver (the SDK server, the config decoded and
// the native provider's NewDriver, which creates the namespace directory)
// called in process, without gRPC (the driver's share).
func BenchmarkNewDriver(b *testing.B) {
	ctx := context.Background()
	b.Run("interleaved", func(b *testing.B) {
		rpc, _, _ := startPlugin(b, pluginDir+"/pocketci-driver-native")
		h := newHost(b)
		var drivers []orchestra.Driver
		b.Cleanup(func() {
			for _, d := range drivers {
				_ = d.Close()
			}
		})
		open := func(name string) step {
			p, err := h.Plugin(name)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := p.Info(ctx); err != nil {
				b.Fatal(err)
			}
			return step{"plugin", func() (func(), error) {
				d, err := p.Open(ctx, name+"-"+strconv.Itoa(len(drivers)), host.OpenOptions{})
				if err == nil {
					drivers = append(drivers, d)
				}
				return nil, err
			}}
		}
		mem := open("mem")
		mem.name = "plugin-mem"
		srv := wire.NewServer(native.Provider(), slog.New(pluginsdk.NewLogHandler(io.Discard, slog.LevelInfo)))
		var handles []uint64
		b.Cleanup(func() {
			for _, id := range handles {
				_, _ = srv.Close(ctx, &driverv1.CloseRequest{Driver: id})
			}
		})
		interleave(b, 0,
			step{"baseline", func() (func(), error) {
				_, err := rpc.Info(ctx, &driverv1.InfoRequest{})
				return nil, err
			}},
			open("native"),
			mem,
			step{"native-open-inprocess", func() (func(), error) {
				resp, err := srv.Open(ctx, &driverv1.OpenRequest{
					Namespace: "ndi-" + strconv.Itoa(len(handles)), HostProtocolVersion: wire.ProtocolVersion,
				})
				if err == nil {
					handles = append(handles, resp.GetDriver())
				}
				return nil, err
			}},
		)
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
	if err := c.Logs(ctx, &counter{}, &counter{}, true); err != nil {
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
// same way by the same process, over a raw unix socket. grpc-ceiling: a bare
// gRPC server stream of 1 MiB messages from the minimal go-plugin plugin.
func BenchmarkLogs256MiB(b *testing.B) {
	const write = 32 << 10
	b.Run("interleaved", func(b *testing.B) {
		ctx := context.Background()
		_, d := pluginDriver(b, newHost(b), "mem", "logs")
		c, err := d.RunContainer(ctx, orchestra.Task{ID: "logs", Command: []string{"logs", strconv.Itoa(streamSize), strconv.Itoa(write)}})
		if err != nil {
			b.Fatal(err)
		}
		client, conn, err := startMin(ctx)
		if err != nil {
			b.Fatal(err)
		}
		defer client.Kill()
		buf := make([]byte, 1<<20)
		b.SetBytes(streamSize)
		interleave(b, streamSize,
			step{"baseline", func() (func(), error) { return nil, rawCopy('r', streamSize, write, buf) }},
			step{"grpc-ceiling", func() (func(), error) { return nil, grpcSource(ctx, conn, streamSize) }},
			step{"plugin", func() (func(), error) {
				var out, errb counter
				if err := c.Logs(ctx, &out, &errb, false); err != nil {
					return nil, err
				}
				if out.n != streamSize {
					return nil, fmt.Errorf("got %d bytes", out.n)
				}
				return nil, nil
			}},
		)
	})
}

// BenchmarkStdin256MiB: 256 MiB of stdin into a task of the in-memory plugin
// that discards it, until the task saw the end. Baseline: the same bytes,
// from the same reader, over a raw unix socket to the same process.
// grpc-ceiling: a bare gRPC client stream of 1 MiB messages, from the same
// reader, to the minimal go-plugin plugin.
func BenchmarkStdin256MiB(b *testing.B) {
	const chunk = 1 << 20
	b.Run("interleaved", func(b *testing.B) {
		ctx := context.Background()
		_, d := pluginDriver(b, newHost(b), "mem", "stdin")
		client, conn, err := startMin(ctx)
		if err != nil {
			b.Fatal(err)
		}
		defer client.Kill()
		buf, src := make([]byte, chunk), make([]byte, chunk)
		i := 0
		b.SetBytes(streamSize)
		interleave(b, streamSize,
			step{"baseline", func() (func(), error) { return nil, rawCopy('w', streamSize, chunk, buf) }},
			step{"grpc-ceiling", func() (func(), error) {
				return nil, grpcSink(ctx, conn, &pattern{left: streamSize, buf: src}, buf, streamSize)
			}},
			step{"plugin", func() (func(), error) {
				i++
				c, err := d.RunContainer(ctx, orchestra.Task{
					ID:      "stdin-" + strconv.Itoa(i),
					Command: []string{"stdin", strconv.Itoa(streamSize)},
					Stdin:   &pattern{left: streamSize, buf: src},
				})
				if err != nil {
					return nil, err
				}
				if err := c.Logs(ctx, &counter{}, &counter{}, true); err != nil {
					return nil, err
				}
				st, err := c.Status(ctx)
				if err != nil {
					return nil, err
				}
				if !st.IsDone() || st.ExitCode() != 0 {
					return nil, fmt.Errorf("stdin task: done=%v exit=%d", st.IsDone(), st.ExitCode())
				}
				return nil, nil
			}},
		)
	})
}

// echoStep runs `echo hello` on d with a fresh task ID each time.
func echoStep(name string, d orchestra.Driver, image string) step {
	i := 0
	return step{name, func() (func(), error) {
		i++
		return nil, runEcho(context.Background(), d, name+"-"+strconv.Itoa(i), image)
	}}
}

// BenchmarkEchoNative: `echo hello` end to end (run, follow, status, check,
// cleanup). Baseline: the native driver in process.
func BenchmarkEchoNative(b *testing.B) {
	b.Run("interleaved", func(b *testing.B) {
		_, d := pluginDriver(b, newHost(b), "native", "echo-plugin")
		interleave(b, 0, echoStep("baseline", nativeDriver(b, "echo-base"), ""), echoStep("plugin", d, ""))
	})
}

// BenchmarkEchoDocker: `echo hello` end to end through the docker plugin.
// Baseline: `docker run --rm busybox echo hello`.
func BenchmarkEchoDocker(b *testing.B) {
	b.Run("interleaved", func(b *testing.B) {
		path := requireDocker(b)
		h := newHost(b)
		p, err := h.Load(path)
		if err != nil {
			b.Fatal(err)
		}
		d, err := p.Open(context.Background(), fmt.Sprintf("bench-%d", os.Getpid()), host.OpenOptions{})
		if err != nil {
			b.Fatal(err)
		}
		defer d.Close()
		interleave(b, 0,
			step{"baseline", func() (func(), error) {
				out, err := exec.Command("docker", "run", "--rm", "--init", "busybox", "echo", "hello").Output()
				if err != nil || string(out) != "hello\n" {
					return nil, fmt.Errorf("docker run: %q, %v", out, err)
				}
				return nil, nil
			}},
			echoStep("plugin", d, "busybox"),
		)
	})
}

// run500 runs 500 `echo hello` tasks on d, 50 at a time.
func run500(d orchestra.Driver, prefix string) error {
	const tasks, parallel = 500, 50
	ctx := context.Background()
	var wg sync.WaitGroup
	sem := make(chan struct{}, parallel)
	errs := make(chan error, tasks)
	for i := range tasks {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := runEcho(ctx, d, fmt.Sprintf("%s-%d", prefix, i), ""); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// BenchmarkTasks500: 500 `echo hello` tasks, 50 at a time, end to end.
// Baseline: the native driver in process. "interleaved" gives the times;
// "baseline" and "plugin" run alone to report peak RSS: of the host (this
// process, its peak reset before the run) and of the plugin process.
func BenchmarkTasks500(b *testing.B) {
	rounds := 0
	step500 := func(name string, d orchestra.Driver) step {
		return step{name, func() (func(), error) {
			rounds++
			return nil, run500(d, fmt.Sprintf("%s%d", name, rounds))
		}}
	}
	b.Run("interleaved", func(b *testing.B) {
		_, d := pluginDriver(b, newHost(b), "native", "t500-plugin")
		interleave(b, 0, step500("baseline", nativeDriver(b, "t500-base")), step500("plugin", d))
	})
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
	loop := func(b *testing.B, d orchestra.Driver) {
		s := step500("rss", d)
		for b.Loop() {
			if _, err := s.run(); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("baseline", func(b *testing.B) {
		d := nativeDriver(b, "t500-rss-base")
		report := hostPeak(b)
		loop(b, d)
		report()
	})
	b.Run("plugin", func(b *testing.B) {
		p, d := pluginDriver(b, newHost(b), "native", "t500-rss-plugin")
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

package docker

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"testing"
	"time"

	"github.com/jtarchie/pocketci/orchestra"
)

// BenchmarkEchoTask measures one task through the driver in process:
// RunContainer, Status until done, Logs, Cleanup. Compare with
// BenchmarkDockerCLIRun, the same work through `docker run --rm`.
func BenchmarkEchoTask(b *testing.B) {
	d, _ := newTestDriver(b, "bench")
	ctx := context.Background()
	i := 0
	for b.Loop() {
		i++
		c, err := d.RunContainer(ctx, orchestra.Task{ID: fmt.Sprintf("echo-%d", i), Image: testImage, Command: []string{"echo", "hello"}})
		if err != nil {
			b.Fatal(err)
		}
		for {
			st, err := c.Status(ctx)
			if err != nil {
				b.Fatal(err)
			}
			if st.IsDone() {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		var out bytes.Buffer
		if err := c.Logs(ctx, &out, nil, false); err != nil || out.String() != "hello\n" {
			b.Fatalf("logs %q, %v", out.String(), err)
		}
		if err := c.Cleanup(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEchoTaskFollow is BenchmarkEchoTask with the output followed:
// RunContainer, Logs with follow (which reads the finished log once more for what
// the engine's follow stream missed), Status, Cleanup.
func BenchmarkEchoTaskFollow(b *testing.B) {
	d, _ := newTestDriver(b, "benchf")
	ctx := context.Background()
	i := 0
	for b.Loop() {
		i++
		c, err := d.RunContainer(ctx, orchestra.Task{ID: fmt.Sprintf("echo-%d", i), Image: testImage, Command: []string{"echo", "hello"}})
		if err != nil {
			b.Fatal(err)
		}
		var out bytes.Buffer
		if err := c.Logs(ctx, &out, nil, true); err != nil || out.String() != "hello\n" {
			b.Fatalf("logs %q, %v", out.String(), err)
		}
		if st, err := c.Status(ctx); err != nil || !st.IsDone() {
			b.Fatalf("status after Logs with follow: %v %v", st, err)
		}
		if err := c.Cleanup(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDockerCLIRunInit is the baseline with the engine's init, as the
// driver runs every task: `docker run --rm --init busybox echo hello`.
func BenchmarkDockerCLIRunInit(b *testing.B) {
	benchCLI(b, "run", "--rm", "--init", testImage, "echo", "hello")
}

// BenchmarkDockerCLIRun is the baseline: `docker run --rm busybox echo hello`.
func BenchmarkDockerCLIRun(b *testing.B) {
	benchCLI(b, "run", "--rm", testImage, "echo", "hello")
}

// BenchmarkDockerCLIRunNetworkNone measures what the default bridge network
// costs: the same run with `--network none`.
func BenchmarkDockerCLIRunNetworkNone(b *testing.B) {
	benchCLI(b, "run", "--rm", "--network", "none", testImage, "echo", "hello")
}

func benchCLI(b *testing.B, args ...string) {
	requireDocker(b)
	if _, err := exec.LookPath("docker"); err != nil {
		b.Skipf("docker CLI not in PATH: %v", err)
	}
	for b.Loop() {
		out, err := exec.Command("docker", args...).Output()
		if err != nil || string(out) != "hello\n" {
			b.Fatalf("docker %v: %q, %v", args, out, err)
		}
	}
}

// BenchmarkFollowVsPoll alternates, in each iteration, one echo task whose
// output is taken with a followed Logs and one whose exit is polled (Status
// every 5 ms) before Logs, and reports the output phase of each (from
// RunContainer's return to all output written) and their ratio: what the
// follow completion (one more read of the finished log) costs, against a
// baseline measured under the same load.
func BenchmarkFollowVsPoll(b *testing.B) {
	d, _ := newTestDriver(b, "benchfp")
	ctx := context.Background()
	var follow, poll time.Duration
	i := 0
	for b.Loop() {
		for _, useFollow := range []bool{true, false} {
			i++
			c, err := d.RunContainer(ctx, orchestra.Task{ID: fmt.Sprintf("echo-%d", i), Image: testImage, Command: []string{"echo", "hello"}})
			if err != nil {
				b.Fatal(err)
			}
			start := time.Now()
			var out bytes.Buffer
			if useFollow {
				err = c.Logs(ctx, &out, nil, true)
			} else {
				for {
					st, serr := c.Status(ctx)
					if serr != nil {
						b.Fatal(serr)
					}
					if st.IsDone() {
						break
					}
					time.Sleep(5 * time.Millisecond)
				}
				err = c.Logs(ctx, &out, nil, false)
			}
			if err != nil || out.String() != "hello\n" {
				b.Fatalf("output %q, %v", out.String(), err)
			}
			if useFollow {
				follow += time.Since(start)
			} else {
				poll += time.Since(start)
			}
			if err := c.Cleanup(ctx); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(follow.Nanoseconds())/float64(b.N), "follow-ns/op")
	b.ReportMetric(float64(poll.Nanoseconds())/float64(b.N), "poll-ns/op")
	b.ReportMetric(float64(follow)/float64(poll), "follow/poll")
}

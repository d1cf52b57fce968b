package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jtarchie/pocketci/internal/wire"
	"github.com/jtarchie/pocketci/orchestra"
)

// Soak sizes: tasks after the warm-up, the warm-up, and tasks at a time.
const (
	soakTasks    = 20000
	soakWarmup   = 2000
	soakParallel = 16
)

// BenchmarkSoak runs 20,000 `echo hello` tasks (run, follow, status,
// cleanup) through one native plugin after a warm-up of 2,000 and reports
// how much the plugin grew: its RSS (VmRSS) and its goroutines (from Info)
// after the warm-up and at the end. A plugin that keeps nothing per finished
// task stays flat. BENCH_SOAK_PLUGIN names another plugin binary to soak
// (for a before/after figure; it must speak a protocol this host serves,
// 1.3 or later).
func BenchmarkSoak(b *testing.B) {
	path := os.Getenv("BENCH_SOAK_PLUGIN")
	if path == "" {
		path = filepath.Join(pluginDir, "pocketci-driver-native")
	}
	rpc, dir, pid := startPlugin(b, path)
	c := wireClient(b, "native", rpc, dir)
	ctx := context.Background()
	d, err := c.Open(ctx, fmt.Sprintf("soak-%d", os.Getpid()), wire.OpenOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer d.Close()
	round := 0
	for b.Loop() {
		round++
		if err := runMany(d, fmt.Sprintf("w%d", round), soakWarmup); err != nil {
			b.Fatal(err)
		}
		rss0, g0 := pluginFootprint(b, c, pid)
		start := time.Now()
		if err := runMany(d, fmt.Sprintf("s%d", round), soakTasks); err != nil {
			b.Fatal(err)
		}
		elapsed := time.Since(start)
		rss1, g1 := pluginFootprint(b, c, pid)
		b.ReportMetric(rss0, "rss-warm-MiB")
		b.ReportMetric(rss1, "rss-end-MiB")
		b.ReportMetric(rss1-rss0, "rss-growth-MiB")
		b.ReportMetric(float64(g0), "goroutines-warm")
		b.ReportMetric(float64(g1), "goroutines-end")
		b.ReportMetric(float64(elapsed.Microseconds())/soakTasks, "us/task")
	}
}

// runMany runs n echo tasks on d, soakParallel at a time.
func runMany(d orchestra.Driver, prefix string, n int) error {
	var wg sync.WaitGroup
	errs := make(chan error, soakParallel)
	next := make(chan int)
	for range soakParallel {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := runEcho(context.Background(), d, fmt.Sprintf("%s-%d", prefix, i), ""); err != nil {
					select {
					case errs <- err:
					default:
					}
					return
				}
			}
		}()
	}
	for i := range n {
		select {
		case next <- i:
		case err := <-errs:
			close(next)
			wg.Wait()
			return err
		}
	}
	close(next)
	wg.Wait()
	select {
	case err := <-errs:
		return err
	default:
		return nil
	}
}

// pluginFootprint is the plugin's RSS in MiB and its goroutine count, after
// a pause that lets goroutines of finished calls end.
func pluginFootprint(b *testing.B, c *wire.Client, pid int) (float64, int64) {
	b.Helper()
	time.Sleep(500 * time.Millisecond)
	runtime.GC()
	info, err := c.Info(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseFloat(strings.Fields(rest)[0], 64)
			if err != nil {
				b.Fatal(err)
			}
			return kb / 1024, info.Goroutines
		}
	}
	b.Fatalf("no VmRSS for plugin %d", pid)
	return 0, 0
}

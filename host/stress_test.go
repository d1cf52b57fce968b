package host

import (
	"bufio"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/jtarchie/pocketci/orchestra"
)

// The stress tests run with `make test-stress` (go test without -short).

// memKiB reads a field such as VmRSS or VmHWM of /proc/<pid>/status.
func memKiB(t *testing.T, pid, field string) int {
	t.Helper()
	f, err := os.Open("/proc/" + pid + "/status")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			n, err := strconv.Atoi(strings.Fields(rest)[0])
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatalf("no %s in /proc/%s/status", field, pid)
	return 0
}

// resetPeak resets the peak RSS (VmHWM) of pid to its current RSS.
func resetPeak(t *testing.T, pid string) {
	t.Helper()
	if err := os.WriteFile("/proc/"+pid+"/clear_refs", []byte("5"), 0); err != nil {
		t.Fatalf("reset peak RSS of %s: %v", pid, err)
	}
}

func stressDriver(t *testing.T) (orchestra.Driver, string) {
	t.Helper()
	if testing.Short() {
		t.Skip("stress test: run without -short (make test-stress)")
	}
	dir := privateDir(t)
	install(t, dir, "stress", 0o755)
	h, _ := newHost(t, dir)
	p, _ := h.Plugin("stress")
	d, err := p.Open(context.Background(), "stress-"+strconv.Itoa(os.Getpid()), OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d, pluginPID(t, p)
}

func TestStress200ConcurrentTasks(t *testing.T) {
	d, plugin := stressDriver(t)
	const tasks, size = 200, 1 << 20
	self := strconv.Itoa(os.Getpid())
	resetPeak(t, self)
	resetPeak(t, plugin)
	want := sha256.Sum256([]byte(strings.Repeat("x", size)))
	var wg sync.WaitGroup
	errs := make(chan error, tasks)
	for i := range tasks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := d.RunContainer(context.Background(), orchestra.Task{
				ID:      fmt.Sprintf("t%d", i),
				Command: []string{"sh", "-c", fmt.Sprintf("head -c %d /dev/zero | tr '\\0' x", size)},
			})
			if err != nil {
				errs <- err
				return
			}
			h := sha256.New()
			var n countWriter
			if err := c.Logs(context.Background(), io.MultiWriter(h, &n), io.Discard, true); err != nil {
				errs <- err
				return
			}
			st, err := c.Status(context.Background())
			switch {
			case err != nil:
				errs <- err
			case !st.IsDone() || st.ExitCode() != 0:
				errs <- fmt.Errorf("task %d: done=%v exit=%d", i, st.IsDone(), st.ExitCode())
			case n != size || string(h.Sum(nil)) != string(want[:]):
				errs <- fmt.Errorf("task %d: %d bytes of output, want %d intact", i, n, size)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	hostPeak, pluginPeak := memKiB(t, self, "VmHWM")/1024, memKiB(t, plugin, "VmHWM")/1024
	t.Logf("200 tasks x 1 MiB: peak RSS host %d MiB, plugin %d MiB", hostPeak, pluginPeak)
	// 200 MiB of output passed through; a plugin that buffers it (or holds
	// each chunk in an oversized buffer) goes far past this.
	if pluginPeak > 128 {
		t.Fatalf("plugin peak RSS %d MiB while following 200 tasks, want at most 128 MiB", pluginPeak)
	}
}

// countWriter counts what is written to it.
type countWriter int

func (c *countWriter) Write(p []byte) (int, error) {
	*c += countWriter(len(p))
	return len(p), nil
}

// zeros yields n zero bytes without holding them.
type zeros int64

func (z *zeros) Read(p []byte) (int, error) {
	if *z == 0 {
		return 0, io.EOF
	}
	n := min(int64(len(p)), int64(*z))
	clear(p[:n])
	*z -= zeros(n)
	return int(n), nil
}

func TestStressGiBThroughThePlugin(t *testing.T) {
	d, plugin := stressDriver(t)
	const gib = 1 << 30
	self := strconv.Itoa(os.Getpid())
	tests := []struct {
		name string
		task orchestra.Task
	}{
		{"stdin", orchestra.Task{ID: "stdin", Command: []string{"wc", "-c"}, Stdin: new(zeros)}},
		{"logs", orchestra.Task{ID: "logs", Command: []string{"head", "-c", strconv.Itoa(gib), "/dev/zero"}}},
	}
	*tests[0].task.Stdin.(*zeros) = gib
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			baseHost, basePlugin := memKiB(t, self, "VmRSS"), memKiB(t, plugin, "VmRSS")
			resetPeak(t, self)
			resetPeak(t, plugin)
			c, err := d.RunContainer(context.Background(), tt.task)
			if err != nil {
				t.Fatal(err)
			}
			var out countWriter
			if err := c.Logs(context.Background(), &out, io.Discard, true); err != nil {
				t.Fatal(err)
			}
			if tt.name == "stdin" && out != countWriter(len(strconv.Itoa(gib))+1) {
				t.Fatalf("wc -c printed %d bytes, want the count of 1 GiB", out)
			}
			if tt.name == "logs" && out != gib {
				t.Fatalf("logs: %d bytes, want 1 GiB", out)
			}
			growHost := memKiB(t, self, "VmHWM") - baseHost
			growPlugin := memKiB(t, plugin, "VmHWM") - basePlugin
			t.Logf("1 GiB of %s: RSS growth host %d MiB, plugin %d MiB", tt.name, growHost/1024, growPlugin/1024)
			if growHost > 64<<10 || growPlugin > 64<<10 {
				t.Fatalf("1 GiB of %s grew RSS by %d KiB (host) and %d KiB (plugin), want under 64 MiB each", tt.name, growHost, growPlugin)
			}
		})
	}
}

package wire

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"sync"

	"github.com/jtarchie/pocketci/orchestra"
)

// fakeDriver is a driver whose behaviour is chosen by the task's command,
// to drive the protocol through its corners:
//
//	out N      Logs writes N bytes of a pattern to stdout in 32 KiB writes, and "done\n" to stderr
//	cat        reads stdin to EOF; Logs writes "<bytes> <sha256>\n"; done when stdin ended
//	block      Status blocks until its ctx ends
//	blocklogs  Logs blocks until its ctx ends
//	panic      RunContainer panics
//	fail       RunContainer returns an error wrapping orchestra.ErrInvalidTask
//	label      Logs writes the driver's config label and the task's WorkDir
type fakeDriver struct {
	namespace string
	label     string // from its config; "label" tasks print it

	mu         sync.Mutex
	closed     int
	containers map[string]*fakeContainer
}

func newFakeDriver(namespace string) *fakeDriver {
	return &fakeDriver{namespace: namespace, containers: map[string]*fakeContainer{}}
}

func (d *fakeDriver) Name() string { return "fake" }

func (d *fakeDriver) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.closed++
	return nil
}

func (d *fakeDriver) CreateVolume(_ context.Context, name string, _ int) (orchestra.Volume, error) {
	return fakeVolume(name), nil
}

func (d *fakeDriver) RunContainer(_ context.Context, task orchestra.Task) (orchestra.Container, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if c, ok := d.containers[task.ID]; ok {
		return c, nil
	}
	if len(task.Command) == 0 {
		return nil, fmt.Errorf("command: %w", orchestra.ErrInvalidTask)
	}
	c := &fakeContainer{task: task, label: d.label, done: make(chan struct{})}
	switch task.Command[0] {
	case "panic":
		panic("fake driver panics on purpose")
	case "fail":
		return nil, fmt.Errorf("task %q refused: %w", task.ID, orchestra.ErrInvalidTask)
	case "cat":
		go c.readStdin()
	default:
		close(c.done)
	}
	d.containers[task.ID] = c
	return c, nil
}

func (d *fakeDriver) GetContainer(_ context.Context, id string) (orchestra.Container, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if c, ok := d.containers[id]; ok {
		return c, nil
	}
	return nil, fmt.Errorf("container %q: %w", id, orchestra.ErrContainerNotFound)
}

// fakeConfig is the fake driver's config; a namespace "bad" is refused.
type fakeConfig struct {
	Label  string `json:"label"`
	Secret string `json:"secret"`
}

func (fakeConfig) DriverName() string { return "fake" }

func (c fakeConfig) Validate() error {
	if c.Label == "refuse" {
		return fmt.Errorf("label %q is refused", c.Label)
	}
	return nil
}

// fakeProvider builds fake drivers; each remembers its config.
var fakeProvider = orchestra.NewProvider("fake", func(_ context.Context, ns string, cfg fakeConfig, _ *slog.Logger) (orchestra.Driver, error) {
	if ns == "bad" {
		return nil, fmt.Errorf("namespace %q (secret %s): %w", ns, cfg.Secret, orchestra.ErrInvalidTask)
	}
	d := newFakeDriver(ns)
	d.label = cfg.Label
	return d, nil
})

type fakeContainer struct {
	task  orchestra.Task
	label string
	done  chan struct{}

	n   int64
	sum string
	err error // how reading stdin ended, nil at its end
}

func (c *fakeContainer) readStdin() {
	defer close(c.done)
	if c.task.Stdin == nil {
		return
	}
	h := sha256.New()
	n, err := io.Copy(h, c.task.Stdin)
	c.n, c.sum, c.err = n, hex.EncodeToString(h.Sum(nil)), err
}

func (c *fakeContainer) Status(ctx context.Context) (orchestra.ContainerStatus, error) {
	if c.task.Command[0] == "block" {
		<-ctx.Done()
		return nil, fmt.Errorf("status: %w", ctx.Err())
	}
	select {
	case <-c.done:
		return fakeStatus{done: true, code: len(c.task.Command)}, nil
	default:
		return fakeStatus{}, nil
	}
}

func (c *fakeContainer) ID() string { return c.task.ID }

func (c *fakeContainer) Logs(ctx context.Context, stdout, stderr io.Writer, _ bool) error {
	switch c.task.Command[0] {
	case "label":
		_, err := fmt.Fprintf(stdout, "%s %s %s %d\n", c.label, c.task.WorkDir, c.task.ContainerLimits.CPUKind, c.task.Mounts[0].SizeGB)
		return err
	case "blocklogs":
		<-ctx.Done()
		return fmt.Errorf("logs: %w", ctx.Err())
	case "out":
		n, err := strconv.Atoi(c.task.Command[1])
		if err != nil {
			return err
		}
		if err := writePattern(stdout, n); err != nil {
			return err
		}
		_, err = io.WriteString(stderr, "done\n")
		return err
	case "cat":
		<-c.done
		if c.err != nil {
			_, err := fmt.Fprintf(stdout, "%d stdin error: %v\n", c.n, c.err)
			return err
		}
		_, err := fmt.Fprintf(stdout, "%d %s\n", c.n, c.sum)
		return err
	}
	return nil
}

func (c *fakeContainer) Cleanup(context.Context) error { return nil }

// writePattern writes n bytes of a repeating pattern in 32 KiB writes.
func writePattern(w io.Writer, n int) error {
	buf := make([]byte, 32*1024)
	for i := range buf {
		buf[i] = byte('a' + i%26)
	}
	for n > 0 {
		k := min(n, len(buf))
		if _, err := w.Write(buf[:k]); err != nil {
			return err
		}
		n -= k
	}
	return nil
}

type fakeStatus struct {
	done bool
	code int
}

func (s fakeStatus) IsDone() bool  { return s.done }
func (s fakeStatus) ExitCode() int { return s.code }

type fakeVolume string

func (v fakeVolume) Name() string                  { return string(v) }
func (v fakeVolume) Path() string                  { return "/fake/" + string(v) }
func (v fakeVolume) Cleanup(context.Context) error { return nil }

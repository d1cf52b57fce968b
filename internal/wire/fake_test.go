package wire

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing/iotest"

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
	var vd orchestra.VolumeDataAccessor
	var sb orchestra.SandboxDriver
	if strings.Contains(cfg.Label, "volumes") {
		vd = &fakeVolumes{data: map[string][]byte{}}
	}
	if strings.Contains(cfg.Label, "sandboxes") {
		sb = fakeSandboxes{}
	}
	return Optional(d, vd, sb), nil
})

// fakeVolumes keeps each volume's archive as it was copied in. A volume
// "broken" fails its archive after some bytes; "gen-N" is N bytes made as
// they are read; "sink" counts what is copied in and keeps nothing.
// CopyToVolume reads to the end and reports what the reader said.
type fakeVolumes struct {
	mu   sync.Mutex
	data map[string][]byte
	sunk int64
}

func (f *fakeVolumes) CopyToVolume(_ context.Context, volume string, r io.Reader) error {
	if volume == "sink" { // streams: counts what it got, keeps nothing
		n, err := io.Copy(io.Discard, r)
		f.mu.Lock()
		defer f.mu.Unlock()
		f.sunk = n
		return err
	}
	b, err := io.ReadAll(r)
	if err != nil {
		return fmt.Errorf("volume %q: %w", volume, err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.data[volume] = b
	return nil
}

func (f *fakeVolumes) CopyFromVolume(_ context.Context, volume string) (io.ReadCloser, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	b, ok := f.data[volume]
	switch {
	case strings.HasPrefix(volume, "gen-"): // gen-N: N bytes, made as they are read
		n, _ := strconv.ParseInt(strings.TrimPrefix(volume, "gen-"), 10, 64)
		return io.NopCloser(&patternReader{left: int(n)}), nil
	case volume == "broken":
		return io.NopCloser(io.MultiReader(strings.NewReader(strings.Repeat("x", 3<<20)), iotest.ErrReader(errors.New("disk fell off")))), nil
	case !ok:
		return nil, fmt.Errorf("volume %q: %w", volume, orchestra.ErrVolumeNotFound)
	}
	return io.NopCloser(bytes.NewReader(b)), nil
}

func (f *fakeVolumes) ReadFilesFromVolume(ctx context.Context, volume string, paths ...string) (io.ReadCloser, error) {
	if len(paths) == 1 && paths[0] == "../escape" {
		return nil, fmt.Errorf("path %q escapes the volume: %w", paths[0], orchestra.ErrInvalidTask)
	}
	return f.CopyFromVolume(ctx, volume)
}

// fakeSandboxes start fakeSandbox; the command decides what Exec does:
// "echo" writes its arguments, env and workDir; "cat" copies stdin; "exit N"
// exits N; "wait" blocks until its ctx ends.
type fakeSandboxes struct{}

func (fakeSandboxes) StartSandbox(_ context.Context, task orchestra.Task) (orchestra.Sandbox, error) {
	return &fakeSandbox{id: "sb-" + task.ID}, nil
}

type fakeSandbox struct {
	id      string
	cleaned int
}

func (s *fakeSandbox) ID() string { return s.id }

func (s *fakeSandbox) Cleanup(context.Context) error {
	s.cleaned++
	return nil
}

func (s *fakeSandbox) Exec(ctx context.Context, cmd []string, env map[string]string, workDir string, stdin io.Reader, stdout, stderr io.Writer) (orchestra.ContainerStatus, error) {
	switch cmd[0] {
	case "echo":
		fmt.Fprintf(stdout, "%s|%s|%d\n", strings.Join(cmd[1:], " "), workDir, len(env))
		fmt.Fprint(stderr, env["GREET"])
	case "cat":
		if stdin == nil {
			return fakeStatus{done: true, code: 3}, nil
		}
		if _, err := io.Copy(stdout, stdin); err != nil {
			fmt.Fprintf(stderr, "stdin: %v", err)
			return fakeStatus{done: true, code: 1}, nil
		}
	case "exit":
		code, _ := strconv.Atoi(cmd[1])
		return fakeStatus{done: true, code: code}, nil
	case "wait":
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return fakeStatus{done: true}, nil
}

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

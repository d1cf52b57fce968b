// Command memplugin is the throughput fixture: pluginsdk.Serve with a tiny
// in-memory driver, so the log and stdin benchmarks measure the protocol and
// not a disk. It reports the name from its file name (pocketci-driver-<name>).
// Its config is an empty JSON object. A container's ID is its task ID, found
// again by any driver of the same namespace in the process; volumes hold
// nothing and are at no path on this machine.
//
// A task's Command picks what its container does:
//
//	["logs", N, W]  done at once; Logs writes N bytes to stdout in writes of
//	                W bytes from one reusable buffer
//	["stdin", N]    reads Stdin to the end and discards it; done at EOF with
//	                exit code 0 when it read exactly N bytes, 1 otherwise
//
// With BENCH_RAW_SOCKET set, the process also listens on that unix socket
// for the raw baseline: a request is one op byte, N (uint64) and W (uint32),
// big-endian. Op 'r' sends N bytes in writes of W and closes; op 'w' reads N
// bytes, discarding them, then answers with the 8-byte count.
package main

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/jtarchie/pocketci/internal/bulk"
	"github.com/jtarchie/pocketci/orchestra"
	"github.com/jtarchie/pocketci/pluginsdk"
)

func main() {
	if path := os.Getenv("BENCH_RAW_SOCKET"); path != "" {
		if err := listenRaw(path); err != nil {
			fmt.Fprintln(os.Stderr, "raw socket:", err)
			os.Exit(1)
		}
	}
	name = strings.TrimPrefix(filepath.Base(os.Args[0]), "pocketci-driver-")
	pluginsdk.Serve(orchestra.NewProvider[config](name, newDriver))
}

// name is the plugin's name, from its file name.
var name = "mem"

// config is the driver's config: it has no settings.
type config struct{}

func (config) DriverName() string { return name }

// namespaces holds the containers of every namespace of the process, so
// that a second driver of a namespace finds the first one's.
var namespaces = struct {
	sync.Mutex
	m map[string]map[string]*container
}{m: map[string]map[string]*container{}}

type driver struct {
	namespace string
}

func newDriver(_ context.Context, namespace string, _ config, _ *slog.Logger) (orchestra.Driver, error) {
	return &driver{namespace: namespace}, nil
}

func (d *driver) Name() string { return name }

// Close forgets the namespace's containers.
func (d *driver) Close() error {
	namespaces.Lock()
	delete(namespaces.m, d.namespace)
	namespaces.Unlock()
	return nil
}

func (d *driver) CreateVolume(_ context.Context, volume string, _ int) (orchestra.Volume, error) {
	return memVolume(volume), nil
}

func (d *driver) GetContainer(_ context.Context, id string) (orchestra.Container, error) {
	namespaces.Lock()
	defer namespaces.Unlock()
	if c, ok := namespaces.m[d.namespace][id]; ok {
		return c, nil
	}
	return nil, fmt.Errorf("memplugin: container %q in namespace %q: %w", id, d.namespace, orchestra.ErrContainerNotFound)
}

func (d *driver) RunContainer(_ context.Context, task orchestra.Task) (orchestra.Container, error) {
	if err := orchestra.ValidateTask(task); err != nil {
		return nil, fmt.Errorf("memplugin: %w", err)
	}
	namespaces.Lock()
	defer namespaces.Unlock()
	containers := namespaces.m[d.namespace]
	if containers == nil {
		containers = map[string]*container{}
		namespaces.m[d.namespace] = containers
	}
	if c, ok := containers[task.ID]; ok {
		return c, nil
	}
	if len(task.Command) < 2 {
		return nil, fmt.Errorf("memplugin: command %q: want logs N W or stdin N", task.Command)
	}
	n, err := strconv.ParseInt(task.Command[1], 10, 64)
	if err != nil {
		return nil, fmt.Errorf("memplugin: size: %w", err)
	}
	c := &container{id: task.ID, n: n, done: make(chan struct{})}
	switch task.Command[0] {
	case "logs":
		if len(task.Command) < 3 {
			return nil, fmt.Errorf("memplugin: command %q: want logs N W", task.Command)
		}
		w, err := strconv.Atoi(task.Command[2])
		if err != nil {
			return nil, fmt.Errorf("memplugin: write size: %w", err)
		}
		c.buf = make([]byte, w)
		close(c.done)
	case "stdin":
		go c.drain(task.Stdin)
	default:
		return nil, fmt.Errorf("memplugin: unknown mode %q", task.Command[0])
	}
	containers[task.ID] = c
	return c, nil
}

// memVolume is a volume that holds nothing.
type memVolume string

func (v memVolume) Name() string                  { return string(v) }
func (v memVolume) Path() string                  { return "memplugin:" + string(v) }
func (v memVolume) Cleanup(context.Context) error { return nil }

type container struct {
	id   string
	n    int64
	buf  []byte
	done chan struct{}
	code int
}

func (c *container) drain(r io.Reader) {
	defer close(c.done)
	if r == nil {
		c.code = 2
		return
	}
	got, _ := io.CopyBuffer(io.Discard, onlyReader{r}, make([]byte, 1<<20))
	if got != c.n {
		c.code = 1
	}
}

// onlyReader hides io.WriterTo so that CopyBuffer uses the given buffer.
type onlyReader struct{ io.Reader }

type status struct {
	done bool
	code int
}

func (s status) IsDone() bool  { return s.done }
func (s status) ExitCode() int { return s.code }

func (c *container) Status(context.Context) (orchestra.ContainerStatus, error) {
	select {
	case <-c.done:
		return status{true, c.code}, nil
	default:
		return status{}, nil
	}
}

func (c *container) ID() string { return c.id }

// Logs writes the task's output; with follow, once the task is done (a
// logs task is done at once, a stdin task writes nothing).
func (c *container) Logs(ctx context.Context, stdout, _ io.Writer, follow bool) error {
	if follow {
		select {
		case <-c.done:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if c.buf == nil {
		return nil
	}
	for left := c.n; left > 0; {
		p := c.buf[:min(int64(len(c.buf)), left)]
		if _, err := stdout.Write(p); err != nil {
			return err
		}
		left -= int64(len(p))
	}
	return nil
}

func (c *container) Cleanup(context.Context) error { return nil }

func listenRaw(path string) error {
	_ = os.Remove(path)
	l, err := net.Listen("unix", path)
	if err != nil {
		return err
	}
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			bulk.Tune(conn)
			go serveRaw(conn)
		}
	}()
	return nil
}

func serveRaw(conn net.Conn) {
	defer conn.Close()
	var hdr [13]byte
	if _, err := io.ReadFull(conn, hdr[:]); err != nil {
		return
	}
	n := int64(binary.BigEndian.Uint64(hdr[1:9]))
	w := int(binary.BigEndian.Uint32(hdr[9:13]))
	buf := make([]byte, w)
	switch hdr[0] {
	case 'r':
		for left := n; left > 0; {
			p := buf[:min(int64(w), left)]
			if _, err := conn.Write(p); err != nil {
				return
			}
			left -= int64(len(p))
		}
	case 'w':
		var got int64
		for got < n {
			k, err := conn.Read(buf)
			got += int64(k)
			if err != nil {
				break
			}
		}
		var ack [8]byte
		binary.BigEndian.PutUint64(ack[:], uint64(got))
		_, _ = conn.Write(ack[:])
	}
}

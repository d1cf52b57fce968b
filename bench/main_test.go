package bench

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/jtarchie/pocketci/host"
	"github.com/jtarchie/pocketci/internal/bulk"
	"github.com/jtarchie/pocketci/internal/wire"
	"github.com/jtarchie/pocketci/orchestra"
	"github.com/jtarchie/pocketci/plugins/native"
	"github.com/jtarchie/pocketci/proto/driverv1"
)

// Fixtures built once by TestMain.
var (
	pluginDir  string // pocketci-driver-native and pocketci-driver-mem
	minPlugin  string // the baseline go-plugin plugin
	rawSocket  string // the memplugin's raw unix socket
	nativeRoot string
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "pocketci-bench-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	pluginDir = filepath.Join(dir, "plugins")
	nativeRoot = filepath.Join(dir, "native")
	minPlugin = filepath.Join(dir, "minplugin")
	rawSocket = filepath.Join(dir, "raw.sock")
	if err := os.MkdirAll(pluginDir, 0o700); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	builds := [][2]string{
		{minPlugin, "./testdata/minplugin"},
		{filepath.Join(pluginDir, "pocketci-driver-mem"), "./testdata/memplugin"},
		{filepath.Join(pluginDir, "pocketci-driver-native"), "../plugins/native/cmd/pocketci-driver-native"},
	}
	for _, b := range builds {
		if out, err := exec.Command("go", "build", "-o", b[0], b[1]).CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "build %s: %v\n%s", b[1], err, out)
			return 1
		}
	}
	// Plugins inherit the environment: the native plugin keeps its tasks
	// in the temp dir, the mem plugin listens on the raw socket.
	os.Setenv(native.RootEnv, nativeRoot)
	os.Setenv("BENCH_RAW_SOCKET", rawSocket)
	return m.Run()
}

var quiet = slog.New(slog.DiscardHandler)

// newHost returns a host over the fixture plugins, closed with the benchmark.
func newHost(b *testing.B) *host.Host {
	b.Helper()
	h, err := host.New(host.Config{Dirs: []string{pluginDir}, Logger: quiet})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if err := h.Close(); err != nil {
			b.Error(err)
		}
	})
	return h
}

func pluginDriver(b *testing.B, h *host.Host, name, namespace string) (*host.Plugin, orchestra.Driver) {
	b.Helper()
	p, err := h.Plugin(name)
	if err != nil {
		b.Fatal(err)
	}
	d, err := p.Open(context.Background(), namespace, host.OpenOptions{})
	if err != nil {
		b.Fatal(err)
	}
	return p, d
}

func nativeDriver(b *testing.B, namespace string) orchestra.Driver {
	b.Helper()
	d, err := native.Provider().NewDriver(context.Background(), namespace, nil, quiet)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = d.Close() })
	return d
}

// minHandshake matches testdata/minplugin.
var minHandshake = plugin.HandshakeConfig{ProtocolVersion: 1, MagicCookieKey: "BENCH_MIN_PLUGIN", MagicCookieValue: "min"}

type minPluginClient struct{ plugin.NetRPCUnsupportedPlugin }

func (minPluginClient) GRPCServer(*plugin.GRPCBroker, *grpc.Server) error { return nil }

func (minPluginClient) GRPCClient(_ context.Context, _ *plugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
	return c, nil
}

var hclogQuiet = hclog.New(&hclog.LoggerOptions{Output: io.Discard, Level: hclog.Warn})

// startMin starts the minimal plugin and returns its connection after one
// answered Ping.
func startMin(ctx context.Context) (*plugin.Client, *grpc.ClientConn, error) {
	return startMinOpts(ctx, nil)
}

// startMinOpts is startMin with extra gRPC dial options.
func startMinOpts(ctx context.Context, dial []grpc.DialOption) (*plugin.Client, *grpc.ClientConn, error) {
	client := plugin.NewClient(&plugin.ClientConfig{
		GRPCDialOptions:  dial,
		HandshakeConfig:  minHandshake,
		Plugins:          plugin.PluginSet{"min": minPluginClient{}},
		Cmd:              exec.Command(minPlugin),
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		Logger:           hclogQuiet,
	})
	proto, err := client.Client()
	if err != nil {
		client.Kill()
		return nil, nil, err
	}
	raw, err := proto.Dispense("min")
	if err != nil {
		client.Kill()
		return nil, nil, err
	}
	conn := raw.(*grpc.ClientConn)
	if err := ping(ctx, conn); err != nil {
		client.Kill()
		return nil, nil, err
	}
	return client, conn, nil
}

func ping(ctx context.Context, conn *grpc.ClientConn) error {
	return conn.Invoke(ctx, "/bench.Min/Ping", &emptypb.Empty{}, &emptypb.Empty{})
}

// startPlugin starts a pluginsdk plugin binary straight through go-plugin,
// with its private socket directory, for calls the host does not expose,
// and returns its raw driver client, that directory and its PID.
func startPlugin(b testing.TB, path string) (rpc driverv1.DriverClient, dir string, pid int) {
	b.Helper()
	dir, err := os.MkdirTemp(socketBase(), "pocketci-bench-")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	// go-plugin names the plugin's socket directory only to a RunnerFunc;
	// with Cmd the plugin is told here, and puts its sockets, the bulk one
	// included, in dir.
	cmd := exec.Command(path)
	cmd.Env = []string{"PLUGIN_UNIX_SOCKET_DIR=" + dir}
	client := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  wire.HandshakeConfig(),
		VersionedPlugins: wire.ClientPlugins(),
		Cmd:              cmd,
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		Logger:           hclogQuiet,
	})
	b.Cleanup(client.Kill)
	proto, err := client.Client()
	if err != nil {
		b.Fatal(err)
	}
	raw, err := proto.Dispense(wire.PluginKey)
	if err != nil {
		b.Fatal(err)
	}
	return raw.(driverv1.DriverClient), dir, client.ReattachConfig().Pid
}

// socketBase is where startPlugin makes its socket directory: /tmp when
// the temporary directory is so long that a socket path two levels below
// it would pass the 108-byte limit (as host does).
func socketBase() string {
	if base := os.TempDir(); len(base) <= 40 {
		return base
	}
	return "/tmp"
}

// wireClient is the host's client over rpc, a plugin started by
// startPlugin in dir, once it accepted the plugin's Info (bulk socket
// included).
func wireClient(b testing.TB, name string, rpc driverv1.DriverClient, dir string) *wire.Client {
	b.Helper()
	c := wire.NewClient(name, rpc)
	info, err := c.Info(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	if err := c.Accept(info, dir); err != nil {
		b.Fatal(err)
	}
	return c
}

// runEcho runs `echo hello` as task id to the end the way a CI host does:
// RunContainer, follow the output until exit, Status, check the output,
// Cleanup.
func runEcho(ctx context.Context, d orchestra.Driver, id, image string) error {
	c, err := d.RunContainer(ctx, orchestra.Task{ID: id, Image: image, Command: []string{"echo", "hello"}})
	if err != nil {
		return err
	}
	var out, errb bytes.Buffer
	if err := c.Logs(ctx, &out, &errb, true); err != nil {
		return err
	}
	st, err := c.Status(ctx)
	if err != nil {
		return err
	}
	if !st.IsDone() || st.ExitCode() != 0 || out.String() != "hello\n" {
		return fmt.Errorf("task %s: done=%v exit=%d stdout=%q stderr=%q", id, st.IsDone(), st.ExitCode(), out.String(), errb.String())
	}
	return c.Cleanup(ctx)
}

// rawCopy moves n bytes over a fresh connection to the mem plugin's raw
// socket: op 'r' reads them (written in writes of w), op 'w' writes them in
// writes of w. It is the baseline for the streams, with the socket buffers
// the bulk connections have.
func rawCopy(op byte, n int64, w int, buf []byte) error {
	conn, err := net.Dial("unix", rawSocket)
	if err != nil {
		return err
	}
	defer conn.Close()
	bulk.Tune(conn) // the same socket buffers as the plugin's bulk connections
	var hdr [13]byte
	hdr[0] = op
	binary.BigEndian.PutUint64(hdr[1:9], uint64(n))
	binary.BigEndian.PutUint32(hdr[9:13], uint32(w))
	if _, err := conn.Write(hdr[:]); err != nil {
		return err
	}
	var got int64
	switch op {
	case 'r':
		for {
			k, err := conn.Read(buf)
			got += int64(k)
			if err == io.EOF {
				break
			}
			if err != nil {
				return err
			}
		}
	case 'w':
		// The same source as the plugin's stdin: a pattern reader.
		src := &pattern{left: n, buf: make([]byte, w)}
		for {
			k, rerr := src.Read(buf[:w])
			if k > 0 {
				if _, err := conn.Write(buf[:k]); err != nil {
					return err
				}
			}
			if rerr != nil {
				break
			}
		}
		var ack [8]byte
		if _, err := io.ReadFull(conn, ack[:]); err != nil {
			return err
		}
		got = int64(binary.BigEndian.Uint64(ack[:]))
	}
	if got != n {
		return fmt.Errorf("raw copy %c: moved %d of %d bytes", op, got, n)
	}
	return nil
}

// counter discards what it is given and counts it.
type counter struct{ n int64 }

func (c *counter) Write(p []byte) (int, error) {
	c.n += int64(len(p))
	return len(p), nil
}

// pattern is a reader of n bytes copied from one reusable buffer.
type pattern struct {
	left int64
	buf  []byte
}

func (p *pattern) Read(b []byte) (int, error) {
	if p.left <= 0 {
		return 0, io.EOF
	}
	k := int(min(int64(len(b)), p.left))
	for i := 0; i < k; {
		i += copy(b[i:k], p.buf)
	}
	p.left -= int64(k)
	return k, nil
}

// vmHWM reads a process's peak resident set size in KiB.
func vmHWM(pid string) (float64, error) {
	data, err := os.ReadFile("/proc/" + pid + "/status")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			f := strings.Fields(rest)
			return strconv.ParseFloat(f[0], 64)
		}
	}
	return 0, fmt.Errorf("no VmHWM in /proc/%s/status", pid)
}

// resetHWM resets this process's peak RSS to its current RSS (Linux 4.0+).
func resetHWM() error {
	return os.WriteFile("/proc/self/clear_refs", []byte("5"), 0)
}

// requireDocker skips without a Docker engine and busybox:latest, or fails
// when ORCHESTRA_REQUIRE_DOCKER=1.
func requireDocker(b *testing.B) string {
	b.Helper()
	miss := b.Skipf
	if os.Getenv("ORCHESTRA_REQUIRE_DOCKER") == "1" {
		miss = b.Fatalf
	}
	if out, err := exec.Command("docker", "image", "inspect", "busybox:latest").CombinedOutput(); err != nil {
		miss("no Docker engine with busybox:latest (set ORCHESTRA_REQUIRE_DOCKER=1 to fail instead): %v: %s", err, out)
	}
	path, err := filepath.Abs("../bin/pocketci-driver-docker")
	if err != nil {
		b.Fatal(err)
	}
	if _, err := os.Stat(path); err != nil {
		miss("docker plugin not built (run make build): %v", err)
	}
	return path
}

// grpcSource reads n bytes from the minimal plugin's server stream.
func grpcSource(ctx context.Context, conn *grpc.ClientConn, n int64) error {
	s, err := conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, "/bench.Min/Source")
	if err != nil {
		return err
	}
	if err := s.SendMsg(wrapperspb.Int64(n)); err != nil {
		return err
	}
	if err := s.CloseSend(); err != nil {
		return err
	}
	var got int64
	for {
		var m wrapperspb.BytesValue
		err := s.RecvMsg(&m)
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		got += int64(len(m.GetValue()))
	}
	if got != n {
		return fmt.Errorf("grpc source: got %d of %d bytes", got, n)
	}
	return nil
}

// grpcSink sends r to the minimal plugin's client stream in messages of
// len(buf) bytes.
func grpcSink(ctx context.Context, conn *grpc.ClientConn, r io.Reader, buf []byte, n int64) error {
	s, err := conn.NewStream(ctx, &grpc.StreamDesc{ClientStreams: true}, "/bench.Min/Sink")
	if err != nil {
		return err
	}
	for {
		k, rerr := r.Read(buf)
		if k > 0 {
			if err := s.SendMsg(&wrapperspb.BytesValue{Value: buf[:k]}); err != nil {
				return err
			}
		}
		if rerr != nil {
			break
		}
	}
	if err := s.CloseSend(); err != nil {
		return err
	}
	var got wrapperspb.Int64Value
	if err := s.RecvMsg(&got); err != nil {
		return err
	}
	if got.GetValue() != n {
		return fmt.Errorf("grpc sink: plugin got %d of %d bytes", got.GetValue(), n)
	}
	return nil
}

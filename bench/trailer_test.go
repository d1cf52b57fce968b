package bench

import (
	"context"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc"

	"github.com/jtarchie/pocketci/internal/wire"
	"github.com/jtarchie/pocketci/orchestra"
	"github.com/jtarchie/pocketci/proto/driverv1"
)

// countingClient counts the Status RPCs that reach the plugin.
type countingClient struct {
	driverv1.DriverClient
	status atomic.Int64
}

func (c *countingClient) Status(ctx context.Context, in *driverv1.ContainerRef, opts ...grpc.CallOption) (*driverv1.StatusResponse, error) {
	c.status.Add(1)
	return c.DriverClient.Status(ctx, in, opts...)
}

// TestFollowedLogsCacheStatus: after Logs with follow returns, Status
// answers from the exit code that the logs stream's exit frame carried,
// without an RPC.
func TestFollowedLogsCacheStatus(t *testing.T) {
	ctx := context.Background()
	raw, dir, _ := startPlugin(t, pluginDir+"/pocketci-driver-mem")
	rpc := &countingClient{DriverClient: raw}
	d, err := wireClient(t, "mem", rpc, dir).Open(ctx, "trailer", wire.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	// 3 bytes of stdin where 4 are expected: the task exits with code 1.
	c, err := d.RunContainer(ctx, orchestra.Task{ID: "t", Command: []string{"stdin", "4"}, Stdin: &pattern{left: 3, buf: []byte("x")}})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Logs(ctx, &counter{}, &counter{}, true); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		st, err := c.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !st.IsDone() || st.ExitCode() != 1 {
			t.Fatalf("status done=%v exit=%d, want done with exit code 1", st.IsDone(), st.ExitCode())
		}
	}
	if n := rpc.status.Load(); n != 0 {
		t.Fatalf("%d Status RPCs after a followed Logs, want 0", n)
	}
}

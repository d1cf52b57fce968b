package wire

import (
	"context"
	"time"

	"github.com/jtarchie/pocketci/orchestra"
	"github.com/jtarchie/pocketci/proto/driverv1"
)

// The host's half of Detach and Attach (its twin is server_detach.go).

// OpenDriver is a driver instance a plugin kept open while its host was
// away; see Client.Attach and Client.Adopt.
type OpenDriver struct {
	Handle          uint64
	Namespace       string
	Name            string
	ContainerFinder bool
	// Implements lists the optional orchestra interfaces the driver
	// implements, as the plugin reports them.
	Implements []string
}

// Detach tells the plugin that the host exits on purpose and will attach
// again within timeout: the plugin keeps running and keeps its drivers open.
// It needs the plugin's "detach" capability.
func (c *Client) Detach(ctx context.Context, timeout time.Duration) error {
	_, err := c.rpc.Detach(ctx, &driverv1.DetachRequest{TimeoutSeconds: int64(max(timeout/time.Second, 1))})
	return fromStatus(c.name, "Detach", err)
}

// Attach makes hostPID the plugin's host and returns the drivers it kept
// open, for Adopt.
func (c *Client) Attach(ctx context.Context, hostPID int) ([]OpenDriver, error) {
	resp, err := c.rpc.Attach(ctx, &driverv1.AttachRequest{HostPid: int64(hostPID)})
	if err != nil {
		return nil, fromStatus(c.name, "Attach", err)
	}
	var out []OpenDriver
	for _, d := range resp.GetDrivers() {
		out = append(out, OpenDriver{Handle: d.GetDriver(), Namespace: d.GetNamespace(), Name: d.GetName(),
			ContainerFinder: d.GetContainerFinder(), Implements: d.GetImplements()})
	}
	return out, nil
}

// Adopt returns the driver for an instance that is already open in the
// plugin, as Open would have.
func (c *Client) Adopt(od OpenDriver) orchestra.Driver { return c.adopt(od, nil) }

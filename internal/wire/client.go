package wire

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/jtarchie/pocketci/orchestra"
	"github.com/jtarchie/pocketci/proto/driverv1"
)

// Client is the host half of the protocol: it speaks to one plugin process
// and opens orchestra drivers inside it. Its twin on the plugin side is
// server.go.
type Client struct {
	name string
	rpc  driverv1.DriverClient
	// bulk is the plugin's bulk socket, which carries every byte and Run.
	bulk string
	// minor is the plugin's protocol minor, once Accept saw its Info.
	minor int
	caps  []string
}

// NewClient wraps a connection to the plugin called name. Accept must see
// the plugin's Info before the client opens drivers.
func NewClient(name string, rpc driverv1.DriverClient) *Client {
	return &Client{name: name, rpc: rpc}
}

// Info is what a plugin reports about itself.
type Info struct {
	Name            string   `json:"name"`
	PluginVersion   string   `json:"plugin_version"`
	SDKVersion      string   `json:"sdk_version"`
	ProtocolVersion string   `json:"protocol_version"`
	Capabilities    []string `json:"capabilities"`
	// BulkAddr is the plugin's bulk socket.
	BulkAddr string `json:"bulk_addr,omitempty"`
	// Goroutines is the plugin's goroutine count when it answered.
	Goroutines int64 `json:"goroutines,omitempty"`
}

// Info asks the plugin to describe itself.
func (c *Client) Info(ctx context.Context) (Info, error) {
	resp, err := c.rpc.Info(ctx, &driverv1.InfoRequest{HostProtocolVersion: ProtocolVersion})
	if err != nil {
		return Info{}, fromStatus(c.name, "Info", err)
	}
	return Info{
		Name:            resp.GetName(),
		PluginVersion:   resp.GetPluginVersion(),
		SDKVersion:      resp.GetSdkVersion(),
		ProtocolVersion: resp.GetProtocolVersion(),
		Capabilities:    resp.GetCapabilities(),
		BulkAddr:        resp.GetBulkAddr(),
		Goroutines:      resp.GetGoroutines(),
	}, nil
}

// Accept checks info, the plugin's answer to Info, and sets the client up
// for it: the protocol minor it speaks, and its bulk socket, which must
// resolve inside dir, the plugin's private socket directory. A plugin this
// host cannot serve is refused with one line that says why (see CheckInfo).
func (c *Client) Accept(info Info, dir string) error {
	minor, err := CheckInfo(info)
	if err != nil {
		return fmt.Errorf("plugin %s: %w", c.name, err)
	}
	bulk, err := resolveInside(info.BulkAddr, dir)
	if err != nil {
		return fmt.Errorf("plugin %s: bulk socket %q: %w", c.name, info.BulkAddr, err)
	}
	c.minor, c.caps, c.bulk = minor, info.Capabilities, bulk
	return nil
}

func (c *Client) has(capability string) bool { return slices.Contains(c.caps, capability) }

// OpenOptions are how a driver instance is opened.
type OpenOptions struct {
	// Config is the driver's config as JSON; empty for its defaults.
	Config json.RawMessage
	// Ephemeral marks a namespace that must not outlive its host: when the
	// host dies without closing the driver, the plugin closes it, even one
	// served with pluginsdk.KeepOnHostExit.
	Ephemeral bool
}

// Open creates a driver instance for namespace inside the plugin. The
// result implements orchestra.VolumeDataAccessor and orchestra.SandboxDriver
// exactly when the plugin's driver does.
func (c *Client) Open(ctx context.Context, namespace string, opts OpenOptions) (orchestra.Driver, error) {
	if err := orchestra.ValidateNamespace(namespace); err != nil {
		return nil, fmt.Errorf("plugin %s: Open: %w", c.name, err)
	}
	if err := c.checkConfigSupported(opts.Config); err != nil {
		return nil, err
	}
	resp, err := c.rpc.Open(ctx, &driverv1.OpenRequest{
		Namespace: namespace, Ephemeral: opts.Ephemeral, Config: opts.Config, HostProtocolVersion: ProtocolVersion,
	})
	if err != nil {
		return nil, redact(fromStatus(c.name, "Open", err), opts.Config)
	}
	if resp.GetDriver() == 0 {
		return nil, c.invalidReply("Open", "driver handle 0")
	}
	od := OpenDriver{Handle: resp.GetDriver(), Namespace: namespace, Name: resp.GetName(),
		ContainerFinder: resp.GetContainerFinder(), Implements: resp.GetImplements()}
	return c.adopt(od, secretsOf(opts.Config)), nil
}

// CheckConfig asks the plugin to decode and validate a driver config, as
// Open would, without opening a driver.
func (c *Client) CheckConfig(ctx context.Context, config json.RawMessage) error {
	if err := c.checkConfigSupported(config); err != nil || !c.has(CapabilityConfig) {
		return err
	}
	_, err := c.rpc.CheckConfig(ctx, &driverv1.CheckConfigRequest{Config: config})
	return redact(fromStatus(c.name, "CheckConfig", err), config)
}

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

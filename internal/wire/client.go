package wire

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/jtarchie/pocketci/internal/pluginprovider"
	"github.com/jtarchie/pocketci/internal/secrets"
	"github.com/jtarchie/pocketci/orchestra"
	"github.com/jtarchie/pocketci/proto/driverv1"
)

// Client is the host half of the protocol: it speaks to one plugin process
// and opens orchestra drivers inside it. Its twin is Server.
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

// knownCapabilities are the capabilities a plugin may list; a 1.3 plugin
// also lists the last three, which mean nothing.
var knownCapabilities = append(slices.Clone(sdkCapabilities), "stdin_stream", "follow_logs", "get_container")

// CheckInfo checks a plugin's Info before the host uses it, and returns the
// protocol minor it speaks. It refuses, in one line that says why: a
// protocol version that is not "1.N", one this host does not serve, an
// unknown or repeated capability, a required one missing, and no bulk
// socket.
func CheckInfo(info Info) (minor int, err error) {
	minor, err = parseVersion(info.ProtocolVersion)
	if err != nil {
		return 0, err
	}
	seen := map[string]bool{}
	for _, c := range info.Capabilities {
		switch {
		case seen[c]:
			return 0, fmt.Errorf("Info lists the capability %q twice", c)
		case !slices.Contains(knownCapabilities, c):
			return 0, fmt.Errorf("Info lists the capability %q, which protocol %s does not define", c, ProtocolVersion)
		}
		seen[c] = true
	}
	required := []string{CapabilityBulk, CapabilityRun}
	if minor > legacyMinor {
		required = append(required, CapabilityConfig)
	}
	for _, c := range required {
		if !seen[c] {
			return 0, fmt.Errorf("Info lacks the capability %q that protocol 1.%d requires", c, minor)
		}
	}
	if info.BulkAddr == "" {
		return 0, errors.New("Info has no bulk socket address")
	}
	return minor, nil
}

// parseVersion reads "1.N" and checks that this host serves it.
func parseVersion(v string) (int, error) {
	major, minorText, ok := strings.Cut(v, ".")
	minor, err := strconv.Atoi(minorText)
	if !ok || major != strconv.Itoa(ProtocolMajor) || err != nil || minor < 0 || strconv.Itoa(minor) != minorText {
		return 0, fmt.Errorf("Info reports protocol version %q, which is not %d.N", v, ProtocolMajor)
	}
	switch {
	case minor < legacyMinor:
		return 0, fmt.Errorf("protocol %s is no longer served (this host serves 1.%d to %s); rebuild the plugin with SDK %s or later",
			v, legacyMinor, ProtocolVersion, SDKVersion)
	case minor > ProtocolMinor:
		return 0, fmt.Errorf("protocol %s is newer than this host's %s; update orchestra", v, ProtocolVersion)
	}
	return minor, nil
}

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
		return nil, c.fail("Open", err)
	}
	if err := c.checkConfigSupported(opts.Config); err != nil {
		return nil, err
	}
	resp, err := c.rpc.Open(ctx, &driverv1.OpenRequest{
		Namespace: namespace, Ephemeral: opts.Ephemeral, Config: opts.Config, HostProtocolVersion: ProtocolVersion,
	})
	if err != nil {
		return nil, secrets.Err(fromStatus(c.name, "Open", err), secrets.Of(opts.Config))
	}
	if resp.GetDriver() == 0 {
		return nil, c.invalidReply("Open", "driver handle 0")
	}
	od := OpenDriver{Handle: resp.GetDriver(), Namespace: namespace, Name: resp.GetName(),
		ContainerFinder: resp.GetContainerFinder(), Implements: resp.GetImplements()}
	return c.adopt(od, secrets.Of(opts.Config)), nil
}

// CheckConfig asks the plugin to decode and validate a driver config, as
// Open would, without opening a driver.
func (c *Client) CheckConfig(ctx context.Context, config json.RawMessage) error {
	if err := c.checkConfigSupported(config); err != nil || !c.has(CapabilityConfig) {
		return err
	}
	_, err := c.rpc.CheckConfig(ctx, &driverv1.CheckConfigRequest{Config: config})
	return secrets.Err(fromStatus(c.name, "CheckConfig", err), secrets.Of(config))
}

// Provider is the plugin's driver provider as the client reaches it: every
// driver it builds is a new instance in the plugin.
func (c *Client) Provider() orchestra.DriverProvider {
	return pluginprovider.New(c.name, c.CheckConfig, func(ctx context.Context, namespace string, config json.RawMessage) (orchestra.Driver, error) {
		return c.Open(ctx, namespace, OpenOptions{Config: config})
	})
}

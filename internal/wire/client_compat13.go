package wire

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/jtarchie/pocketci/internal/bulk"

	"github.com/jtarchie/pocketci/orchestra"
	"github.com/jtarchie/pocketci/proto/driverv1"
)

// Protocol 1.3, as the host still serves it: the one place that knows how a
// 1.3 plugin (SDK 0.1) differs from a 1.4 one. Such a plugin runs tasks over
// the same Run stream and bulk logs; it differs in what it cannot carry,
// which is refused here with errors.ErrUnsupported and a word on rebuilding,
// and in the framing of stdin.

// legacyMinor is the oldest protocol minor the host serves.
const legacyMinor = 3

func (c *Client) legacy() bool { return c.minor == legacyMinor }

// unsupported is the error for what a 1.3 plugin cannot do.
func (c *Client) unsupported(op, what string) error {
	return fmt.Errorf("plugin %s: %s: %s is not supported by protocol 1.%d (SDK 0.1); rebuild the plugin with SDK %s or later: %w",
		c.name, op, what, c.minor, SDKVersion, errors.ErrUnsupported)
}

// checkConfigSupported refuses a config for a 1.3 plugin, which has none.
func (c *Client) checkConfigSupported(config []byte) error {
	if c.legacy() && len(config) > 0 && string(config) != "null" {
		return c.unsupported("Open", "a driver config")
	}
	return nil
}

// checkTaskSupported refuses the task fields a 1.3 plugin would drop.
func (c *Client) checkTaskSupported(t orchestra.Task) error {
	if !c.legacy() {
		return nil
	}
	switch {
	case t.WorkDir != "":
		return c.unsupported("RunContainer", "Task.WorkDir")
	case t.ContainerLimits.CPUKind != "":
		return c.unsupported("RunContainer", "Task.ContainerLimits.CPUKind")
	}
	for i, m := range t.Mounts {
		if m.SizeGB != 0 {
			return c.unsupported("RunContainer", fmt.Sprintf("Task.Mounts[%d].SizeGB", i))
		}
	}
	return nil
}

// getContainerRequest asks for a container by ID; a 1.3 plugin's IDs are
// task IDs, found only when its driver implemented ContainerFinder.
func (d *clientDriver) getContainerRequest(id string) (*driverv1.GetContainerRequest, error) {
	if !d.client.legacy() {
		return &driverv1.GetContainerRequest{Driver: d.handle, ContainerId: id}, nil
	}
	if !d.finder {
		return nil, d.client.unsupported("GetContainer", "finding containers for this driver")
	}
	return &driverv1.GetContainerRequest{Driver: d.handle, TaskId: id}, nil
}

// logsAfterExit is Logs with follow for a 1.3 container that cannot stream:
// its output once it exited.
func (c *clientContainer) logsAfterExit(ctx context.Context, stdout, stderr io.Writer) error {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		st, err := c.Status(ctx)
		if err != nil {
			return err
		}
		if st.IsDone() {
			return c.Logs(ctx, stdout, stderr, false)
		}
		select {
		case <-ctx.Done():
			return c.driver.client.fail("Logs", ctx.Err())
		case <-tick.C:
		}
	}
}

// stdinFraming is the plugin's stdin framing.
func (c *Client) stdinFraming() stdinFraming {
	if c.legacy() {
		return legacyStdinFraming
	}
	return bulkStdinFraming
}

// legacyStdinErrorBit marks a 1.3 stdin frame that carries the caller's
// read error.
const legacyStdinErrorBit = 1 << 31

// legacyStdinFraming is protocol 1.3's: a 4-byte big-endian length and the
// bytes; length 0 ends the input, a length with the top bit set carries the
// read error's message.
var legacyStdinFraming = stdinFraming{
	legacy: true,
	data:   func(w io.Writer, p []byte) error { return bulk.WriteLength(w, uint32(len(p)), p) },
	end: func(w io.Writer, readErr error) error {
		if readErr == nil {
			return bulk.WriteLength(w, 0, nil)
		}
		msg := []byte(readErr.Error())
		return bulk.WriteLength(w, legacyStdinErrorBit|uint32(len(msg)), msg)
	},
}

package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/jtarchie/pocketci/host"
	"github.com/jtarchie/pocketci/orchestra"
)

// cmdVolume moves a volume's files as a tar stream: put reads one on stdin
// into the volume, get writes the volume (or the given paths in it) on
// stdout. The namespace is kept, as with run --namespace.
func cmdVolume(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs, c := newFlagSet("volume", "volume (put|get) [--driver NAME] [--driver-config FILE|JSON] NAMESPACE VOLUME [PATH...]", stderr)
	driverName := fs.String("driver", "native", "driver plugin `name`")
	driverConfig := fs.String("driver-config", "", "driver config: a JSON object, or a `file` holding one")
	if len(args) == 0 || (args[0] != "put" && args[0] != "get") {
		fs.Usage()
		return errors.New("volume: want put or get")
	}
	op := args[0]
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if fs.NArg() < 2 || (op == "put" && fs.NArg() != 2) {
		fs.Usage()
		return fmt.Errorf("volume %s: want NAMESPACE VOLUME%s", op, map[string]string{"get": " [PATH...]", "put": ""}[op])
	}
	config, err := readDriverConfig(*driverConfig)
	if err != nil {
		return err
	}
	h, driver, err := c.openDriver(ctx, stderr, *driverName, fs.Arg(0), host.Config{}, host.OpenOptions{Config: config})
	if err != nil {
		return err
	}
	defer h.Close()
	defer host.Release(driver)
	vd, ok := driver.(orchestra.VolumeDataAccessor)
	if !ok {
		return fmt.Errorf("volume: driver %s does not move volume data (it does not implement orchestra.VolumeDataAccessor)", *driverName)
	}
	if op == "put" {
		return vd.CopyToVolume(ctx, fs.Arg(1), stdin)
	}
	return copyVolumeOut(ctx, vd, fs.Arg(1), fs.Args()[2:], stdout)
}

func copyVolumeOut(ctx context.Context, vd orchestra.VolumeDataAccessor, volume string, paths []string, stdout io.Writer) error {
	var rc io.ReadCloser
	var err error
	if len(paths) == 0 {
		rc, err = vd.CopyFromVolume(ctx, volume)
	} else {
		rc, err = vd.ReadFilesFromVolume(ctx, volume, paths...)
	}
	if err != nil {
		return err
	}
	defer rc.Close()
	if _, err := io.Copy(stdout, rc); err != nil {
		return fmt.Errorf("volume %q: %w", volume, err)
	}
	return nil
}

// openDriver starts a host and opens namespace in the plugin called name,
// started under ctx so that Ctrl-C ends a slow start.
func (c *common) openDriver(ctx context.Context, stderr io.Writer, name, namespace string, cfg host.Config, opts host.OpenOptions) (*host.Host, orchestra.Driver, error) {
	h, err := c.host(ctx, stderr, cfg)
	if err != nil {
		return nil, nil, err
	}
	p, err := h.Plugin(name)
	if err == nil {
		_, err = p.Info(ctx)
	}
	var driver orchestra.Driver
	if err == nil {
		driver, err = p.Open(ctx, namespace, opts)
	}
	if err != nil {
		h.Close()
		return nil, nil, err
	}
	return h, driver, nil
}

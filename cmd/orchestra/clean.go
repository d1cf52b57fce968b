package main

import (
	"context"
	"fmt"
	"io"

	"github.com/jtarchie/pocketci/host"
)

func cmdClean(ctx context.Context, args []string, stderr io.Writer) error {
	fs, c := newFlagSet("clean", "clean [--driver NAME] [--driver-config FILE|JSON] NAMESPACE", stderr)
	driverName := fs.String("driver", "native", "driver plugin `name`")
	driverConfig := fs.String("driver-config", "", "driver config the namespace was run with: a JSON object, or a `file` holding one")
	if err := fs.Parse(args); err != nil {
		return err
	}
	config, err := readDriverConfig(*driverConfig)
	if err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return fmt.Errorf("clean: want exactly one NAMESPACE, got %d arguments", fs.NArg())
	}
	h, err := c.host(ctx, stderr, host.Config{})
	if err != nil {
		return err
	}
	defer h.Close()
	p, err := h.Plugin(*driverName)
	if err != nil {
		return err
	}
	if _, err := p.Info(ctx); err != nil {
		return err
	}
	driver, err := p.Open(ctx, fs.Arg(0), host.OpenOptions{Config: config})
	if err != nil {
		return err
	}
	if err := driver.Close(); err != nil {
		return fmt.Errorf("clean namespace %q: %w", fs.Arg(0), err)
	}
	return nil
}

package main

import (
	"context"
	"fmt"
	"io"
)

func cmdClean(_ context.Context, args []string, stderr io.Writer) error {
	fs, c := newFlagSet("clean", "clean [--driver NAME] NAMESPACE", stderr)
	driverName := fs.String("driver", "native", "driver plugin `name`")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return fmt.Errorf("clean: want exactly one NAMESPACE, got %d arguments", fs.NArg())
	}
	h, err := c.host(stderr)
	if err != nil {
		return err
	}
	defer h.Close()
	p, err := h.Plugin(*driverName)
	if err != nil {
		return err
	}
	driver, err := p.NewDriver(fs.Arg(0), nil)
	if err != nil {
		return err
	}
	if err := driver.Close(); err != nil {
		return fmt.Errorf("clean namespace %q: %w", fs.Arg(0), err)
	}
	return nil
}

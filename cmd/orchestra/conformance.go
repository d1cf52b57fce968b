package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"time"

	"github.com/jtarchie/pocketci/host"
	"github.com/jtarchie/pocketci/orchestra"
	"github.com/jtarchie/pocketci/orchestra/conformance"
)

func cmdConformance(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, c := newFlagSet("conformance", "conformance (--driver NAME | --plugin PATH) [flags]", stderr)
	driverName := fs.String("driver", "", "driver plugin `name` from the plugin directories")
	pluginPath := fs.String("plugin", "", "`path` of a plugin binary pocketci-driver-<name>")
	image := fs.String("image", "busybox", "`image` the tasks run in")
	timeout := fs.Duration("timeout", 2*time.Minute, "`limit` for each case")
	runRE := fs.String("run", "", "run only the cases matching `regexp`, like go test -run")
	asJSON := fs.Bool("json", false, "print JSON for scripts")
	driverConfig := fs.String("driver-config", "", "driver config: a JSON object, or a `file` holding one")
	if err := fs.Parse(args); err != nil {
		return err
	}
	config, err := readDriverConfig(*driverConfig)
	if err != nil {
		return err
	}
	if (*driverName == "") == (*pluginPath == "") {
		fs.Usage()
		return errors.New("conformance: give exactly one of --driver NAME and --plugin PATH")
	}
	opts := conformance.Options{Image: *image, Timeout: *timeout}
	if *runRE != "" {
		re, err := regexp.Compile(*runRE)
		if err != nil {
			return fmt.Errorf("conformance: --run %q: %w", *runRE, err)
		}
		opts.Run = re
	}
	// The case timeout also bounds each driver's Close and the plugin's
	// shutdown, so that a plugin that stops answering cannot hold up the
	// report, nor the deferred Close.
	h, err := c.host(ctx, stderr, host.Config{CloseTimeout: *timeout, ShutdownTimeout: min(*timeout, 5*time.Second), StartTimeout: *timeout})
	if err != nil {
		return err
	}
	defer h.Close()
	var p *host.Plugin
	if *pluginPath != "" {
		p, err = h.Load(*pluginPath)
	} else {
		p, err = h.Plugin(*driverName)
	}
	if err != nil {
		return err
	}
	ictx, cancel := context.WithTimeout(ctx, *timeout)
	_, err = p.Info(ictx)
	cancel()
	if err != nil {
		return err
	}
	opts.New = func(namespace string) (orchestra.Driver, error) {
		octx, cancel := context.WithTimeout(ctx, *timeout)
		defer cancel()
		return p.Open(octx, namespace, host.OpenOptions{Config: config})
	}

	report := func(r conformance.Result) {
		if *asJSON {
			return
		}
		mark := "PASS"
		switch {
		case r.Skipped:
			mark = "SKIP"
		case !r.Passed:
			mark = "FAIL"
		}
		fmt.Fprintf(stdout, "--- %s  %-32s %8s\n", mark, r.Name, r.Duration.Round(time.Millisecond))
		if r.Error != "" {
			fmt.Fprintf(stdout, "      %s\n", escape(r.Error))
		}
	}
	if !*asJSON {
		fmt.Fprintf(stdout, "conformance: %s (%s)\n", p.Name, p.Path)
	}
	results := conformance.RunAll(ctx, opts, report)
	failed, skippedN := 0, 0
	for _, r := range results {
		switch {
		case r.Skipped:
			skippedN++
		case !r.Passed:
			failed++
		}
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(map[string]any{"plugin": p.Name, "path": p.Path, "results": results, "passed": len(results) - failed - skippedN, "failed": failed, "skipped": skippedN}); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(stdout, "%d passed, %d failed, %d skipped\n", len(results)-failed-skippedN, failed, skippedN)
	}
	if failed > 0 {
		return exitError{1}
	}
	return nil
}

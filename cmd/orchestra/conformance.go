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
	p, err := conformancePlugin(ctx, h, *pluginPath, *driverName, *timeout)
	if err != nil {
		return err
	}
	opts.New = func(namespace string) (orchestra.Driver, error) {
		octx, cancel := context.WithTimeout(ctx, *timeout)
		defer cancel()
		return p.Open(octx, namespace, host.OpenOptions{Config: config})
	}
	if !*asJSON {
		fmt.Fprintf(stdout, "conformance: %s (%s)\n", p.Name, p.Path)
	}
	results := conformance.RunAll(ctx, opts, func(r conformance.Result) {
		if !*asJSON {
			printResult(stdout, r)
		}
	})
	return summarize(stdout, p, results, *asJSON)
}

// conformancePlugin loads the plugin at path, or the one called name, and
// starts it within timeout.
func conformancePlugin(ctx context.Context, h *host.Host, path, name string, timeout time.Duration) (*host.Plugin, error) {
	var p *host.Plugin
	var err error
	if path != "" {
		p, err = h.Load(path)
	} else {
		p, err = h.Plugin(name)
	}
	if err != nil {
		return nil, err
	}
	ictx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if _, err := p.Info(ictx); err != nil {
		return nil, err
	}
	return p, nil
}

// printResult prints one case as it ends.
func printResult(stdout io.Writer, r conformance.Result) {
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

// summarize prints the counts (or the whole report as JSON); any failed
// case is exit 1.
func summarize(stdout io.Writer, p *host.Plugin, results []conformance.Result, asJSON bool) error {
	failed, skipped := 0, 0
	for _, r := range results {
		switch {
		case r.Skipped:
			skipped++
		case !r.Passed:
			failed++
		}
	}
	passed := len(results) - failed - skipped
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(map[string]any{"plugin": p.Name, "path": p.Path, "results": results, "passed": passed, "failed": failed, "skipped": skipped}); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(stdout, "%d passed, %d failed, %d skipped\n", passed, failed, skipped)
	}
	if failed > 0 {
		return exitError{1}
	}
	return nil
}

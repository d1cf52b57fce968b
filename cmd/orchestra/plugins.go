package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"
)

// pluginRow is one line of `orchestra plugins`.
type pluginRow struct {
	Name         string   `json:"name"`
	Version      string   `json:"version,omitempty"`
	SDK          string   `json:"sdk_version,omitempty"`
	Protocol     string   `json:"protocol,omitempty"`
	Capabilities []string `json:"capabilities,omitempty"`
	Path         string   `json:"path"`
	SHA256       string   `json:"sha256,omitempty"`
	State        string   `json:"state"`
	Error        string   `json:"error,omitempty"`
}

func cmdPlugins(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, c := newFlagSet("plugins", "plugins [--json]", stderr)
	asJSON := fs.Bool("json", false, "print JSON for scripts")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("plugins takes no arguments, got %q", fs.Args())
	}
	h, err := c.host(stderr)
	if err != nil {
		return err
	}
	defer h.Close()

	rows := []pluginRow{}
	for _, p := range h.Plugins() {
		row := pluginRow{Name: p.Name, Path: p.Path, State: "ok"}
		if sum, err := p.SHA256(); err == nil {
			row.SHA256 = sum
		}
		if info, err := p.Info(ctx); err != nil {
			row.State, row.Error = "error", err.Error()
			if p.Err() != nil {
				row.State = "refused"
			}
		} else {
			row.Version, row.SDK, row.Protocol, row.Capabilities = info.PluginVersion, info.SDKVersion, info.ProtocolVersion, info.Capabilities
		}
		rows = append(rows, row)
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rows)
	}
	if len(rows) == 0 {
		fmt.Fprintln(stderr, "no plugins found; directories searched:")
		for _, d := range hostDirs(c) {
			fmt.Fprintln(stderr, "  "+d)
		}
		return nil
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tVERSION\tPROTOCOL\tSTATE\tSHA256\tPATH")
	for _, r := range rows {
		sum := r.SHA256
		if len(sum) > 12 {
			sum = sum[:12]
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", r.Name, dash(r.Version), dash(r.Protocol), r.State, dash(sum), r.Path)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, r := range rows {
		if r.Error != "" {
			fmt.Fprintf(stdout, "\n%s: %s\n", r.Name, r.Error)
		}
	}
	return nil
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

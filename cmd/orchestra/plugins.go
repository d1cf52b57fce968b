package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jtarchie/pocketci/host"
)

// pluginRow is one line of `orchestra plugins`.
type pluginRow struct {
	Name         string   `json:"name"`
	Version      string   `json:"version,omitempty"`
	SDK          string   `json:"sdk_version,omitempty"`
	Protocol     string   `json:"protocol,omitempty"`
	Capabilities []string `json:"capabilities,omitempty"`
	// Implements says which optional orchestra interfaces the driver
	// implements (VolumeDataAccessor, SandboxDriver); an interface the plugin's
	// protocol does not report is absent. Capabilities, by contrast, are
	// what the plugin's protocol serves.
	Implements map[string]bool `json:"implements,omitempty"`
	Path       string          `json:"path"`
	SHA256     string          `json:"sha256,omitempty"`
	State      string          `json:"state"`
	Error      string          `json:"error,omitempty"`
}

func cmdPlugins(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, c := newFlagSet("plugins", "plugins [--json] [--timeout D]", stderr)
	asJSON := fs.Bool("json", false, "print JSON for scripts (plugin-supplied strings raw)")
	timeout := fs.Duration("timeout", 10*time.Second, "`limit` for starting and asking each plugin, and for stopping it")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("plugins takes no arguments, got %q", fs.Args())
	}
	h, err := c.host(ctx, stderr, host.Config{StartTimeout: *timeout, CloseTimeout: *timeout, ShutdownTimeout: min(*timeout, 5*time.Second)})
	if err != nil {
		return err
	}
	defer h.Close()

	rows := []pluginRow{}
	for _, p := range h.Plugins() {
		rows = append(rows, describe(ctx, p, *timeout))
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rows)
	}
	if len(rows) == 0 {
		fmt.Fprintln(stderr, "no plugins found; directories searched:")
		for _, d := range hostDirs(c) {
			fmt.Fprintln(stderr, "  "+escape(d))
		}
		return nil
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tVERSION\tPROTOCOL\tSTATE\tIMPLEMENTS\tSHA256\tPATH")
	for _, r := range rows {
		sum := r.SHA256
		if len(sum) > 12 {
			sum = sum[:12]
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", escape(r.Name), dash(escape(r.Version)), dash(escape(r.Protocol)), r.State,
			dash(implements(r.Implements)), dash(sum), escape(r.Path))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, r := range rows {
		if r.Error != "" {
			fmt.Fprintf(stdout, "\n%s: %s\n", escape(r.Name), oneLine(r.Error))
		}
	}
	return nil
}

// describe asks one plugin about itself, within timeout.
func describe(ctx context.Context, p *host.Plugin, timeout time.Duration) pluginRow {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	row := pluginRow{Name: p.Name, Path: p.Path, State: "ok"}
	if sum, err := p.SHA256(); err == nil {
		row.SHA256 = sum
	}
	info, err := p.Info(ctx)
	if err != nil {
		row.State, row.Error = "error", err.Error()
		if p.Err() != nil {
			row.State = "refused"
		}
		return row
	}
	row.Version, row.SDK, row.Protocol, row.Capabilities = info.PluginVersion, info.SDKVersion, info.ProtocolVersion, info.Capabilities
	// The plugin answers; a driver that cannot be opened here (k8s without
	// a cluster) only hides what it implements.
	impl, err := p.Implements(ctx)
	if err != nil {
		row.Error = "cannot open a driver to see what it implements: " + err.Error()
	}
	row.Implements = impl
	return row
}

// implements is the IMPLEMENTS column: each optional interface the driver
// has.
func implements(m map[string]bool) string {
	var out []string
	for _, name := range []string{host.ImplementsVolumeData, host.ImplementsSandbox} {
		if m[name] {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return strings.Join(out, ",")
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

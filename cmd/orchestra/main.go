// Command orchestra lists driver plugins, runs a task through one, and holds
// a plugin to the conformance suite.
//
//	orchestra plugins [--json]
//	orchestra run [--driver native] [flags] -- CMD ARGS...
//	orchestra conformance (--driver NAME | --plugin PATH) [--json] [--run REGEX]
//	orchestra clean --driver NAME NAMESPACE
//
// Every command takes --plugin-dir (repeatable) and --log-level.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/jtarchie/pocketci/host"
)

// exitError carries a process exit code out of a command.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

const usage = `orchestra runs pocketci tasks through driver plugins.

Usage:
  orchestra plugins      [--json]                     list discovered plugins
  orchestra run          [flags] -- CMD [ARGS...]     run one task, print its output, exit with its code
  orchestra conformance  (--driver NAME | --plugin PATH) [flags]   run the conformance suite
  orchestra clean        [--driver NAME] NAMESPACE    remove a namespace kept with run --namespace

Every command takes:
  --plugin-dir DIR   a plugin directory, searched before ORCHESTRA_PLUGIN_PATH, the
                     orchestra binary's directory and ~/.local/share/pocketci/plugins (repeatable)
  --log-level LEVEL  debug, info, warn or error (default warn)

Run "orchestra COMMAND --help" for a command's flags.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	var exit exitError
	switch {
	case err == nil:
	case errors.As(err, &exit):
		os.Exit(exit.code)
	case errors.Is(err, flag.ErrHelp):
		os.Exit(0)
	default:
		fmt.Fprintf(os.Stderr, "orchestra: %v\n", err)
		os.Exit(125)
	}
}

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitError{2}
	}
	cmd, args := args[0], args[1:]
	switch cmd {
	case "plugins":
		return cmdPlugins(ctx, args, stdout, stderr)
	case "run":
		return cmdRun(ctx, args, stdin, stdout, stderr)
	case "conformance":
		return cmdConformance(ctx, args, stdout, stderr)
	case "clean":
		return cmdClean(ctx, args, stderr)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("unknown command %q", cmd)
	}
}

// common are the flags every command takes.
type common struct {
	pluginDirs stringList
	logLevel   string
}

func newFlagSet(name, synopsis string, stderr io.Writer) (*flag.FlagSet, *common) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	c := &common{}
	fs.Var(&c.pluginDirs, "plugin-dir", "plugin `directory`, searched first (repeatable)")
	fs.StringVar(&c.logLevel, "log-level", "warn", "log `level`: debug, info, warn or error")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: orchestra %s\n\nFlags:\n", synopsis)
		fs.PrintDefaults()
	}
	return fs, c
}

// host discovers the plugins, logging to stderr at the chosen level.
func (c *common) host(stderr io.Writer) (*host.Host, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.logLevel)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", c.logLevel)
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	return host.New(host.Config{Dirs: host.Dirs(c.pluginDirs), Logger: logger})
}

// stringList is a repeatable string flag.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

func hostDirs(c *common) []string { return host.Dirs(c.pluginDirs) }

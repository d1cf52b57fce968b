// Command orchestra lists driver plugins, runs a task through one, and holds
// a plugin to the conformance suite.
//
//	orchestra plugins [--json]
//	orchestra run [--driver native] [flags] -- CMD ARGS...
//	orchestra conformance (--driver NAME | --plugin PATH) [--json] [--run REGEX]
//	orchestra clean --driver NAME NAMESPACE
//	orchestra volume (put|get) [--driver NAME] NAMESPACE VOLUME [PATH...]
//	orchestra sandbox [--driver NAME] [--image IMG] [-e K=V]... [-w DIR] < COMMANDS
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
	"runtime"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/jtarchie/pocketci/host"
	"github.com/jtarchie/pocketci/pluginsdk"
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
  orchestra volume       (put|get) NAMESPACE VOLUME [PATH...]   a volume's files as a tar on stdin or stdout
  orchestra sandbox      [--image IMG] [-e K=V]... [-w DIR]     run each line of stdin in one sandbox
  orchestra version                                   print the build, the plugin protocol and the SDK

Every command takes:
  --plugin-dir DIR   a plugin directory, searched before ORCHESTRA_PLUGIN_PATH, the
                     orchestra binary's directory and ~/.local/share/pocketci/plugins (repeatable)
  --log-level LEVEL  debug, info, warn, error or off (default off: stderr carries only
                     the task's output, and orchestra's own failure as one line)

Run "orchestra COMMAND --help" for a command's flags.
`

func main() {
	os.Exit(runMain(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// runMain runs a command and returns the process's exit code. The first
// SIGINT or SIGTERM cancels the command, which cleans up what it started;
// a second one kills every plugin it started, with its process group, and
// ends the process at once with 130.
func runMain(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	s := &session{}
	ctx, cancel := context.WithCancel(withSession(context.Background(), s))
	defer cancel()
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	// A reader that went away (orchestra run ... | head -1) makes writes to
	// stdout fail with EPIPE instead of killing orchestra before it has
	// cleaned up. Notify, not Ignore: the plugins it starts keep SIGPIPE.
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)
	go func() {
		<-sigs
		cancel()
		<-sigs
		s.kill()
		fmt.Fprintln(stderr, "orchestra: interrupted twice: killed the plugins it started")
		os.Exit(130)
	}()
	err := run(ctx, args, stdin, stdout, stderr)
	var exit exitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &exit):
		return exit.code
	case errors.Is(err, flag.ErrHelp):
		return 0
	case ctx.Err() != nil:
		return 130
	case errors.Is(err, syscall.EPIPE):
		// Like a process killed by SIGPIPE, after cleaning up.
		return 128 + int(syscall.SIGPIPE)
	default:
		fmt.Fprintf(stderr, "orchestra: %s\n", oneLine(err.Error()))
		return 125
	}
}

// oneLine makes an error one line: orchestra's own failures take exactly
// one line of stderr, which otherwise carries only the task's output.
func oneLine(s string) string {
	return escape(strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", " | ")), " "))
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
	case "volume":
		return cmdVolume(ctx, args, stdin, stdout, stderr)
	case "sandbox":
		return cmdSandbox(ctx, args, stdin, stdout, stderr)
	case "version", "--version", "-version":
		fmt.Fprintln(stdout, versionLine())
		return nil
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("unknown command %q", cmd)
	}
}

// versionLine is what --version prints: orchestra's build (its module
// version, or the VCS revision of a development build), the plugin protocol
// this host speaks and the SDK it pairs with, and the Go that built it.
func versionLine() string {
	version, rev := "(devel)", ""
	if bi, ok := debug.ReadBuildInfo(); ok {
		if bi.Main.Version != "" {
			version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				rev = " " + s.Value[:12]
			}
		}
	}
	return fmt.Sprintf("orchestra %s%s, plugin protocol %s, pluginsdk %s, %s %s/%s",
		version, rev, pluginsdk.ProtocolVersion, pluginsdk.SDKVersion, runtime.Version(), runtime.GOOS, runtime.GOARCH)
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
	fs.StringVar(&c.logLevel, "log-level", "off", "log `level`: debug, info, warn, error or off; at off, stderr carries only the task's output and orchestra's own failure")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: orchestra %s\n\nFlags:\n", synopsis)
		fs.PrintDefaults()
	}
	return fs, c
}

// host discovers the plugins, logging to stderr at the chosen level. The
// session of ctx learns of the host, so that a second Ctrl-C can kill its
// plugins.
func (c *common) host(ctx context.Context, stderr io.Writer, cfg host.Config) (*host.Host, error) {
	logger := slog.New(slog.DiscardHandler)
	if c.logLevel != "off" {
		var level slog.Level
		if err := level.UnmarshalText([]byte(c.logLevel)); err != nil {
			return nil, fmt.Errorf("--log-level %q: want debug, info, warn, error or off", c.logLevel)
		}
		logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	}
	cfg.Dirs, cfg.Logger = host.Dirs(c.pluginDirs), logger
	h, err := host.New(cfg)
	if err != nil {
		return nil, err
	}
	if s := sessionOf(ctx); s != nil {
		s.add(h)
	}
	return h, nil
}

// cleanCommand is `orchestra clean` with this run's plugin directories, for
// host.Config.OrphanCleanup; nil when the executable cannot be found.
func (c *common) cleanCommand() []string {
	exe, err := os.Executable()
	if err != nil {
		return nil
	}
	cmd := []string{exe, "clean", "--log-level", "off"}
	for _, d := range c.pluginDirs {
		cmd = append(cmd, "--plugin-dir", d)
	}
	return cmd
}

// stringList is a repeatable string flag.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

func hostDirs(c *common) []string { return host.Dirs(c.pluginDirs) }

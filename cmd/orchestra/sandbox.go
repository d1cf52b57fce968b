package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/jtarchie/pocketci/host"
	"github.com/jtarchie/pocketci/orchestra"
)

// cmdSandbox starts one sandbox and runs each line of stdin in it as
// `sh -c LINE`, printing the output as it comes and the exit code of a
// command that fails. It exits with the last command's code and removes the
// sandbox (and its throwaway namespace) on EOF, Ctrl-C and failure.
func cmdSandbox(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) (err error) {
	fs, c := newFlagSet("sandbox", "sandbox [--driver NAME] [--image IMG] [-e K=V]... [-w DIR] < COMMANDS", stderr)
	driverName := fs.String("driver", "native", "driver plugin `name`")
	image := fs.String("image", "busybox", "container `image`")
	driverConfig := fs.String("driver-config", "", "driver config: a JSON object, or a `file` holding one")
	var workdir string
	fs.StringVar(&workdir, "workdir", "", "working `dir`ectory of every command")
	fs.StringVar(&workdir, "w", "", "short for --workdir")
	var envs stringList
	fs.Var(&envs, "e", "environment variable `KEY=VALUE` of every command (repeatable)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	env, err := parseEnv(envs)
	if err != nil {
		return fmt.Errorf("sandbox: %w", err)
	}
	config, err := readDriverConfig(*driverConfig)
	if err != nil {
		return err
	}
	h, driver, err := c.openDriver(ctx, stderr, *driverName, "sandbox-"+randomHex(4), host.Config{OrphanCleanup: c.cleanCommand()},
		host.OpenOptions{Ephemeral: true, Config: config})
	if err != nil {
		return err
	}
	defer func() { err = joinErr(err, h.Close()) }()
	defer func() { err = joinErr(err, driver.Close()) }()
	sd, ok := driver.(orchestra.SandboxDriver)
	if !ok {
		return fmt.Errorf("sandbox: driver %s has no sandboxes (it does not implement orchestra.SandboxDriver)", *driverName)
	}
	sb, err := sd.StartSandbox(ctx, orchestra.Task{ID: "sandbox", Image: *image, Env: env, WorkDir: workdir})
	if err != nil {
		return err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
		defer cancel()
		err = joinErr(err, sb.Cleanup(cctx))
	}()
	return execLines(ctx, sb, stdin, env, workdir, stdout, stderr)
}

// execLines runs each line of in as a command in sb.
func execLines(ctx context.Context, sb orchestra.Sandbox, in io.Reader, env map[string]string, workdir string, stdout, stderr io.Writer) error {
	lines := bufio.NewScanner(in)
	lines.Buffer(make([]byte, 64<<10), 1<<20)
	last := 0
	for lines.Scan() {
		line := strings.TrimSpace(lines.Text())
		if line == "" {
			continue
		}
		st, err := sb.Exec(ctx, []string{"sh", "-c", line}, env, workdir, nil, stdout, stderr)
		if err != nil {
			return err
		}
		if last = st.ExitCode(); last != 0 {
			fmt.Fprintf(stderr, "orchestra: exit %d: %s\n", last, oneLine(line))
		}
	}
	if err := lines.Err(); err != nil {
		return fmt.Errorf("sandbox: read commands: %w", err)
	}
	if last != 0 {
		return exitError{last}
	}
	return nil
}

// parseEnv reads KEY=VALUE flags.
func parseEnv(envs []string) (map[string]string, error) {
	env := map[string]string{}
	for _, e := range envs {
		k, v, ok := strings.Cut(e, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("-e %q: want KEY=VALUE", e)
		}
		env[k] = v
	}
	return env, nil
}

package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/jtarchie/pocketci/host"
	"github.com/jtarchie/pocketci/orchestra"
	"github.com/jtarchie/pocketci/orchestra/conformance/testkit"
)

// cleanupTimeout bounds the clean-up after a task, also after Ctrl-C.
const cleanupTimeout = 2 * time.Minute

func cmdRun(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) (err error) {
	fs, c := newFlagSet("run", "run [flags] -- CMD [ARGS...]", stderr)
	driverName := fs.String("driver", "native", "driver plugin `name`")
	image := fs.String("image", "busybox", "container `image`")
	namespace := fs.String("namespace", "", "namespace `name` to share with other runs; its volumes persist until `orchestra clean NAME` (default: a fresh namespace, removed at exit)")
	id := fs.String("id", "", "task `ID` (default: random)")
	interactive := fs.Bool("i", false, "forward stdin to the task")
	user := fs.String("user", "", "`user` to run as")
	privileged := fs.Bool("privileged", false, "run with elevated privileges")
	memory := fs.Int64("memory", 0, "memory limit in `bytes` (0: unlimited)")
	cpu := fs.Int64("cpu", 0, "CPU `shares` (0: unlimited)")
	cpuKind := fs.String("cpu-kind", "", "CPU `class` (\"shared\", \"performance\"; a hint where the platform has none)")
	var workdir string
	fs.StringVar(&workdir, "workdir", "", "working `dir`ectory of the command (relative: below the default working directory)")
	fs.StringVar(&workdir, "w", "", "short for --workdir")
	driverConfig := fs.String("driver-config", "", "driver config: a JSON object, or a `file` holding one")
	var envs, volumes stringList
	fs.Var(&envs, "e", "environment variable `KEY=VALUE` (repeatable)")
	fs.Var(&volumes, "v", "volume `NAME:PATH[:SIZE_GB]` (repeatable; a relative PATH is below the working directory)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return errors.New("run: no command given: put it after --, as in: orchestra run -- echo hello")
	}
	task := orchestra.Task{
		Command:         fs.Args(),
		ContainerLimits: orchestra.ContainerLimits{CPU: *cpu, CPUKind: *cpuKind, Memory: *memory},
		Env:             map[string]string{},
		ID:              *id,
		Image:           *image,
		Privileged:      *privileged,
		User:            *user,
		WorkDir:         workdir,
	}
	if *memory < 0 || *cpu < 0 {
		return fmt.Errorf("run: --memory and --cpu must not be negative (got %d, %d)", *memory, *cpu)
	}
	if task.Env, err = parseEnv(envs); err != nil {
		return fmt.Errorf("run: %w", err)
	}
	for _, v := range volumes {
		m, err := parseVolume(v)
		if err != nil {
			return err
		}
		task.Mounts = append(task.Mounts, m)
	}
	config, err := readDriverConfig(*driverConfig)
	if err != nil {
		return err
	}
	if task.ID == "" {
		task.ID = "task-" + randomHex(4)
	}
	if *interactive {
		task.Stdin = stdin
	}
	ns := *namespace
	keep := ns != ""
	if !keep {
		ns = "run-" + randomHex(4)
	}

	// Should orchestra be killed, the reaper of each plugin cleans up the
	// throwaway namespace with `orchestra clean`.
	h, err := c.host(ctx, stderr, host.Config{OrphanCleanup: c.cleanCommand()})
	if err != nil {
		return err
	}
	defer func() {
		if cerr := h.Close(); cerr != nil {
			err = joinErr(err, cerr)
		}
	}()
	p, err := h.Plugin(*driverName)
	if err != nil {
		return err
	}
	// Started under ctx, so that Ctrl-C ends a slow start.
	if _, err := p.Info(ctx); err != nil {
		return err
	}
	// A throwaway namespace dies with orchestra, also when it is killed:
	// a plugin that keeps its resources on host exit must not keep it.
	driver, err := p.Open(ctx, ns, host.OpenOptions{Ephemeral: !keep, Config: config})
	if err != nil {
		return err
	}
	if keep {
		host.Release(driver)
	} else {
		defer func() {
			if cerr := driver.Close(); cerr != nil {
				err = joinErr(err, cerr)
			}
		}()
	}

	container, err := driver.RunContainer(ctx, task)
	if err != nil {
		return err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
		defer cancel()
		if cerr := container.Cleanup(cctx); cerr != nil {
			err = joinErr(err, fmt.Errorf("clean up task %q: %w", task.ID, cerr))
		}
	}()

	code, err := wait(ctx, container, stdout, stderr)
	if err != nil {
		if ctx.Err() != nil {
			return exitError{130}
		}
		return err
	}
	if code != 0 {
		return exitError{code}
	}
	return nil
}

// wait prints the task's output live and returns its exit code.
func wait(ctx context.Context, container orchestra.Container, stdout, stderr io.Writer) (int, error) {
	if err := container.Logs(ctx, stdout, stderr, true); err != nil {
		return 0, err
	}
	st, err := testkit.WaitDone(ctx, container)
	if err != nil {
		return 0, err
	}
	return st.ExitCode(), nil
}

// parseVolume reads -v NAME:PATH[:SIZE_GB].
func parseVolume(v string) (orchestra.Mount, error) {
	parts := strings.Split(v, ":")
	if len(parts) < 2 || len(parts) > 3 || parts[0] == "" || parts[1] == "" {
		return orchestra.Mount{}, fmt.Errorf("run: -v %q: want NAME:PATH or NAME:PATH:SIZE_GB", v)
	}
	m := orchestra.Mount{Name: parts[0], Path: parts[1]}
	if len(parts) == 3 {
		size, err := strconv.Atoi(parts[2])
		if err != nil || size < 0 {
			return orchestra.Mount{}, fmt.Errorf("run: -v %q: the size %q is not a whole number of GB", v, parts[2])
		}
		m.SizeGB = size
	}
	return m, nil
}

// readDriverConfig reads --driver-config: JSON as it is, or the file it
// names. Its contents never appear in an error.
func readDriverConfig(arg string) (json.RawMessage, error) {
	if arg == "" {
		return nil, nil
	}
	raw := []byte(arg)
	if t := strings.TrimSpace(arg); !strings.HasPrefix(t, "{") {
		b, err := os.ReadFile(arg)
		if err != nil {
			return nil, fmt.Errorf("--driver-config: %w", err)
		}
		raw = b
	}
	if !json.Valid(raw) {
		return nil, errors.New("--driver-config: not valid JSON (its contents are not shown: a config may hold secrets)")
	}
	return raw, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// joinErr adds a clean-up failure to err. An exit code from the task stays
// the result; the failure is still reported.
func joinErr(err, cerr error) error {
	if cerr == nil {
		return err
	}
	var exit exitError
	if err == nil || errors.As(err, &exit) {
		if err != nil {
			fmt.Fprintf(os.Stderr, "orchestra: %s\n", oneLine(cerr.Error()))
			return err
		}
		return cerr
	}
	return errors.Join(err, cerr)
}

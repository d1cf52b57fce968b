package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
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
	f := newRunFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return errors.New("run: no command given: put it after --, as in: orchestra run -- echo hello")
	}
	task, err := f.task(fs.Args(), stdin)
	if err != nil {
		return err
	}
	config, err := readDriverConfig(f.driverConfig)
	if err != nil {
		return err
	}
	ns, keep := f.namespace, f.namespace != ""
	if !keep {
		ns = "run-" + randomHex(4)
	}
	// Should orchestra be killed, the reaper of each plugin cleans up the
	// throwaway namespace with `orchestra clean`; a plugin that keeps its
	// resources on host exit must not keep it (Ephemeral).
	h, driver, err := c.openDriver(ctx, stderr, f.driver, ns, host.Config{OrphanCleanup: c.cleanCommand()},
		host.OpenOptions{Ephemeral: !keep, Config: config})
	if err != nil {
		return err
	}
	defer func() { err = joinErr(err, h.Close()) }()
	if keep {
		host.Release(driver)
	} else {
		defer func() { err = joinErr(err, driver.Close()) }()
	}
	return runTask(ctx, driver, task, stdout, stderr)
}

// runFlags are the flags of `orchestra run`.
type runFlags struct {
	driver, image, namespace, id, user, cpuKind, workdir, driverConfig string
	interactive, privileged                                            bool
	memory                                                             byteSize
	cpu                                                                int64
	envs, volumes                                                      stringList
}

func newRunFlags(fs *flag.FlagSet) *runFlags {
	f := &runFlags{}
	fs.StringVar(&f.driver, "driver", "native", "driver plugin `name`")
	fs.StringVar(&f.image, "image", "busybox", "container `image`")
	fs.StringVar(&f.namespace, "namespace", "", "namespace `name` to share with other runs; its volumes persist until `orchestra clean NAME` (default: a fresh namespace, removed at exit)")
	fs.StringVar(&f.id, "id", "", "task `ID` (default: random)")
	fs.BoolVar(&f.interactive, "i", false, "forward stdin to the task")
	fs.StringVar(&f.user, "user", "", "`user` to run as")
	fs.BoolVar(&f.privileged, "privileged", false, "run with elevated privileges")
	fs.Var(&f.memory, "memory", "memory limit: bytes, or with a suffix k, m, g (KiB, MiB, GiB), as in 64m (0: unlimited)")
	fs.Int64Var(&f.cpu, "cpu", 0, "CPU `shares` (0: unlimited)")
	fs.StringVar(&f.cpuKind, "cpu-kind", "", "CPU `class` (\"shared\", \"performance\"; a hint where the platform has none)")
	fs.StringVar(&f.workdir, "workdir", "", "working `dir`ectory of the command (relative: below the default working directory)")
	fs.StringVar(&f.workdir, "w", "", "short for --workdir")
	fs.StringVar(&f.driverConfig, "driver-config", "", "driver config: a JSON object, or a `file` holding one")
	fs.Var(&f.envs, "e", "environment variable `KEY=VALUE` (repeatable)")
	fs.Var(&f.volumes, "v", "volume `NAME:PATH[:SIZE_GB]` (repeatable; a relative PATH is below the working directory)")
	return f
}

// task is the task the flags describe, running command.
func (f *runFlags) task(command []string, stdin io.Reader) (orchestra.Task, error) {
	if f.cpu < 0 {
		return orchestra.Task{}, fmt.Errorf("run: --cpu must not be negative (got %d)", f.cpu)
	}
	task := orchestra.Task{
		Command:         command,
		ContainerLimits: orchestra.ContainerLimits{CPU: f.cpu, CPUKind: f.cpuKind, Memory: int64(f.memory)},
		ID:              f.id,
		Image:           f.image,
		Privileged:      f.privileged,
		User:            f.user,
		WorkDir:         f.workdir,
	}
	var err error
	if task.Env, err = parseEnv(f.envs); err != nil {
		return orchestra.Task{}, fmt.Errorf("run: %w", err)
	}
	for _, v := range f.volumes {
		m, err := parseVolume(v)
		if err != nil {
			return orchestra.Task{}, err
		}
		task.Mounts = append(task.Mounts, m)
	}
	if task.ID == "" {
		task.ID = "task-" + randomHex(4)
	}
	if f.interactive {
		task.Stdin = stdin
	}
	return task, nil
}

// runTask runs task on driver, prints its output live and cleans it up.
// A task that fails is an exitError with its code; Ctrl-C is exit 130.
func runTask(ctx context.Context, driver orchestra.Driver, task orchestra.Task, stdout, stderr io.Writer) (err error) {
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
	switch {
	case err != nil && ctx.Err() != nil:
		return exitError{130}
	case err != nil:
		return err
	case code != 0:
		return exitError{code}
	}
	return nil
}

// byteSize is a size flag: bytes, or a number with a suffix k, m or g
// (KiB, MiB, GiB; upper case too, a trailing "b" allowed), as docker reads
// --memory.
type byteSize int64

func (b *byteSize) String() string { return strconv.FormatInt(int64(*b), 10) }

func (b *byteSize) Set(v string) error {
	s := strings.ToLower(strings.TrimSpace(v))
	s = strings.TrimSuffix(s, "b")
	shift := 0
	if n := len(s); n > 0 {
		switch s[n-1] {
		case 'k':
			shift = 10
		case 'm':
			shift = 20
		case 'g':
			shift = 30
		}
		if shift > 0 {
			s = s[:n-1]
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || n > math.MaxInt64>>shift {
		return fmt.Errorf("%q is not a size: want bytes or a whole number with k, m or g, as in 64m", v)
	}
	*b = byteSize(n << shift)
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

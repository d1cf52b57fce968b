package host

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"regexp"
	"strconv"
)

// handshakeLine matches go-plugin's handshake:
// CORE-VERSION|APP-VERSION|NETWORK|ADDR|PROTOCOL[|CERT...]
var handshakeLine = regexp.MustCompile(`^\d+\|\d+\|(unix|tcp)\|[^|]+\|(grpc|netrpc)(\||$)`)

// pluginRunner starts a plugin process for go-plugin. Unlike go-plugin's own, it
// drops whatever a plugin prints to stdout before its handshake line (a
// driver's init that prints must not break the handshake), and it reports
// the process's exit the moment it happens.
type pluginRunner struct {
	cmd    *exec.Cmd
	stdout io.ReadCloser
	stderr io.ReadCloser
	logger *slog.Logger
	exited func(error)
	pid    int
}

func newRunner(cmd *exec.Cmd, logger *slog.Logger, exited func(error)) (*pluginRunner, error) {
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("plugin stdout: %w", err)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, fmt.Errorf("plugin stderr: %w", err)
	}
	r := &pluginRunner{cmd: cmd, stderr: stderr, logger: logger, exited: exited}
	r.stdout = r.filterStdout(stdout)
	return r, nil
}

// filterStdout passes on the handshake line and everything after it, and
// logs and drops the lines before it.
func (r *pluginRunner) filterStdout(stdout io.ReadCloser) io.ReadCloser {
	pr, pw := io.Pipe()
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64*1024), 1024*1024)
		shook := false
		for sc.Scan() {
			line := sc.Text()
			if !shook && !handshakeLine.MatchString(line) {
				r.logger.Warn("plugin printed to stdout before its handshake; ignored", "line", line)
				continue
			}
			shook = true
			if _, err := io.WriteString(pw, line+"\n"); err != nil {
				// go-plugin stopped reading: drain so the plugin never blocks.
				_, _ = io.Copy(io.Discard, stdout)
				return
			}
		}
		pw.CloseWithError(sc.Err())
	}()
	return pr
}

func (r *pluginRunner) Start(context.Context) error {
	if err := r.cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", r.cmd.Path, err)
	}
	r.pid = r.cmd.Process.Pid
	return nil
}

func (r *pluginRunner) Wait(context.Context) error {
	err := r.cmd.Wait()
	if r.exited != nil {
		r.exited(err)
	}
	return err
}

func (r *pluginRunner) Kill(context.Context) error {
	if r.cmd.Process == nil {
		return nil
	}
	if err := r.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("kill plugin %d: %w", r.pid, err)
	}
	return nil
}

func (r *pluginRunner) Stdout() io.ReadCloser { return r.stdout }
func (r *pluginRunner) Stderr() io.ReadCloser { return r.stderr }
func (r *pluginRunner) Name() string          { return r.cmd.Path }
func (r *pluginRunner) ID() string            { return strconv.Itoa(r.pid) }

func (r *pluginRunner) Diagnose(context.Context) string {
	return fmt.Sprintf("%s did not complete the plugin handshake: is it a pocketci-driver built with pluginsdk.Serve?", r.cmd.Path)
}

func (r *pluginRunner) PluginToHost(network, addr string) (string, string, error) {
	return network, addr, nil
}

func (r *pluginRunner) HostToPlugin(network, addr string) (string, string, error) {
	return network, addr, nil
}

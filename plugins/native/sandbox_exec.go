//go:build linux

package native

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jtarchie/pocketci/plugins/native/internal/shim"
)

// execution is one Exec of a sandbox: a shim and the command below it.
type execution struct {
	sandbox *Sandbox

	mu       sync.Mutex // guards everything below
	killed   error      // why the command was killed; nil while it was not
	killW    *os.File   // closing it makes the shim kill the command's tree
	killDone bool
	pid      int // the shim's pid, which is its process group id; 0 before start
	reaped   bool
}

// execPipes are the driver's ends of an Exec's pipes.
type execPipes struct {
	cmd                 *exec.Cmd
	ctl, stdout, stderr *os.File
	stdin               *os.File // nil without stdin
}

// shimReport is what a shim said on its control pipe at the end.
type shimReport struct {
	code    int
	failure string
	ok      bool // false: the shim died without a report
}

// run starts the command's shim, streams its input and output, and waits
// for its report. It returns the command's exit code, or an error when the
// command was killed (ctx, Cleanup, a failed stdin or output) or the
// driver failed it.
func (e *execution) run(ctx context.Context, spec shim.Spec, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	p, err := e.start(spec, stdin != nil)
	if err != nil {
		return 0, err
	}
	var stdinOnce sync.Once
	closeStdin := func() {
		if p.stdin != nil {
			stdinOnce.Do(func() { _ = p.stdin.Close() })
		}
	}
	if p.stdin != nil {
		go func() {
			if err := feed(p.stdin, stdin); err != nil {
				// Killed before its stdin closes: the command never reads a
				// clean end of a truncated input.
				e.kill(fmt.Errorf("stdin: reading the caller's input failed: %w", err))
			}
			closeStdin()
		}()
	}
	var writeMu sync.Mutex // the caller may pass one writer for both streams
	var copies sync.WaitGroup
	for _, o := range []struct {
		name string
		r    *os.File
		w    io.Writer
	}{{"stdout", p.stdout, stdout}, {"stderr", p.stderr, stderr}} {
		copies.Add(1)
		go func() {
			defer copies.Done()
			copyOutput(o.w, o.r, &writeMu, func(err error) {
				e.kill(fmt.Errorf("output lost: write %s: %w", o.name, err))
			})
			_ = o.r.Close()
		}()
	}
	reports := make(chan shimReport, 1)
	go func() { reports <- readReport(p.ctl) }()
	rep := e.await(ctx, reports)
	copies.Wait()
	ws := e.reap(p.cmd)
	closeStdin()
	return e.result(rep, ws)
}

// start starts the shim with the Exec's pipes. The write end of the kill
// pipe stays here (see shim): closing it kills the command's tree.
func (e *execution) start(spec shim.Spec, withStdin bool) (*execPipes, error) {
	var ends []*os.File // every end made, closed when the start fails
	var err error
	pipe := func() (r, w *os.File) {
		if err == nil {
			if r, w, err = os.Pipe(); err == nil {
				ends = append(ends, r, w)
			}
		}
		return r, w
	}
	p := &execPipes{}
	var ctlW, killR, killW, outW, errW, inR *os.File
	p.ctl, ctlW = pipe()
	killR, killW = pipe()
	p.stdout, outW = pipe()
	p.stderr, errW = pipe()
	if withStdin {
		inR, p.stdin = pipe()
	}
	var null *os.File // fd 4 is a task's lock; a sandbox's command holds none
	if err == nil {
		if null, err = os.Open(os.DevNull); err == nil {
			ends = append(ends, null)
		}
	}
	if err != nil {
		closeFiles(ends...)
		return nil, fmt.Errorf("pipes for the shim: %w", err)
	}
	argv, env := shim.Args(spec)
	cmd := &exec.Cmd{
		Path:        "/proc/self/exe",
		Args:        argv,
		Dir:         filepath.Join(e.sandbox.dir, "work"),
		Env:         env,
		Stdout:      outW,
		Stderr:      errW,
		ExtraFiles:  []*os.File{ctlW, null, killR},
		SysProcAttr: &syscall.SysProcAttr{Setpgid: true},
	}
	if inR != nil {
		cmd.Stdin = inR
	}
	namespaceAttr(cmd.SysProcAttr, spec.Binds)
	if err := e.startLocked(cmd, killW); err != nil {
		closeFiles(ends...)
		return nil, err
	}
	closeFiles(ctlW, killR, outW, errW, inR, null) // the shim has its copies
	p.cmd = cmd
	return p, nil
}

// closeFiles closes every file that is not nil.
func closeFiles(files ...*os.File) {
	for _, f := range files {
		if f != nil {
			_ = f.Close()
		}
	}
}

// startLocked starts cmd unless the Exec was killed already (Cleanup came
// first), and records its kill pipe.
func (e *execution) startLocked(cmd *exec.Cmd, killW *os.File) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.killed != nil {
		return e.killed
	}
	if err := cmd.Start(); err != nil {
		if len(cmd.SysProcAttr.UidMappings) > 0 || cmd.SysProcAttr.Unshareflags != 0 {
			return fmt.Errorf("Mounts: a mount inside another needs a mount namespace of the command's own (root, or unprivileged user namespaces): start the shim: %w", err)
		}
		return fmt.Errorf("start the shim: %w", err)
	}
	e.killW, e.pid = killW, cmd.Process.Pid
	return nil
}

// await waits for the shim's report. When ctx ends first, it kills the
// command's tree, and its shim's group when the shim does not end.
func (e *execution) await(ctx context.Context, reports <-chan shimReport) shimReport {
	select {
	case r := <-reports:
		return r
	case <-ctx.Done():
	}
	e.kill(fmt.Errorf("killed: %w", ctx.Err()))
	soft := time.NewTimer(killWait / 4)
	defer soft.Stop()
	for {
		select {
		case r := <-reports:
			return r
		case <-soft.C:
			e.killHard()
		}
	}
}

// kill asks the shim to kill the command's whole tree, for reason (the
// first reason given is kept).
func (e *execution) kill(reason error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.killed == nil {
		e.killed = reason
	}
	e.closeKillLocked()
}

func (e *execution) closeKillLocked() {
	if e.killW != nil && !e.killDone {
		e.killDone = true
		_ = e.killW.Close()
	}
}

// killHard sends SIGKILL to the shim's process group, unless it was reaped.
func (e *execution) killHard() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.pid > 0 && !e.reaped {
		_ = syscall.Kill(-e.pid, syscall.SIGKILL)
	}
}

// reap waits for the shim to exit, kills what may be left of its group (a
// shim killed with SIGKILL could not) while its zombie still reserves the
// group's id, then reaps it.
func (e *execution) reap(cmd *exec.Cmd) syscall.WaitStatus {
	if err := waitExited(e.pid); err != nil {
		e.sandbox.driver.logger.Warn("wait for sandbox command", "sandbox", e.sandbox.id, "err", err)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	_ = syscall.Kill(-e.pid, syscall.SIGKILL)
	_ = cmd.Wait() // its exit status is in ProcessState
	e.reaped = true
	e.closeKillLocked()
	ws, _ := cmd.ProcessState.Sys().(syscall.WaitStatus)
	return ws
}

// result is the Exec's exit code, or the error that ended it.
func (e *execution) result(rep shimReport, ws syscall.WaitStatus) (int, error) {
	e.mu.Lock()
	killed := e.killed
	e.mu.Unlock()
	switch {
	case killed != nil:
		return 0, killed
	case !rep.ok:
		return 0, fmt.Errorf("the command's shim died without reporting (exit status %d)", shim.ExitCode(ws))
	case rep.failure != "":
		return 0, fmt.Errorf("failed (exit code %d): %s", rep.code, rep.failure)
	}
	return rep.code, nil
}

// readReport reads a shim's control pipe: "pid <n>" once the command
// started, then "<code>" or "<code> <failure>".
func readReport(ctl *os.File) shimReport {
	defer ctl.Close()
	r := bufio.NewReader(ctl)
	for {
		line, err := r.ReadString('\n')
		line = strings.TrimSpace(line)
		if line != "" && !strings.HasPrefix(line, "pid ") {
			s, failure, _ := strings.Cut(line, " ")
			code, cerr := strconv.Atoi(s)
			return shimReport{code: code, failure: failure, ok: cerr == nil}
		}
		if err != nil {
			return shimReport{}
		}
	}
}

// feed copies r into the command's stdin. It returns r's error only: a
// command that stopped reading (EPIPE, or its stdin closed at its end) is
// not a failure.
func feed(w *os.File, r io.Reader) error {
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return nil
			}
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// copyOutput copies r to w as it comes, under mu, until r ends. When w
// fails it calls failed once and drains r, so that the shim is never
// blocked.
func copyOutput(w io.Writer, r *os.File, mu *sync.Mutex, failed func(error)) {
	if w == nil {
		w = io.Discard
	}
	buf := make([]byte, 32<<10)
	var werr error
	for {
		n, err := r.Read(buf)
		if n > 0 && werr == nil {
			mu.Lock()
			_, werr = w.Write(buf[:n])
			mu.Unlock()
			if werr != nil {
				failed(werr)
			}
		}
		if err != nil {
			return
		}
	}
}

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
	"sync"
	"syscall"
	"time"
	"unsafe"
)

// handshakeLine matches go-plugin's handshake:
// CORE-VERSION|APP-VERSION|NETWORK|ADDR|PROTOCOL[|CERT...]
var handshakeLine = regexp.MustCompile(`^\d+\|\d+\|(unix|tcp)\|[^|]+\|(grpc|netrpc)(\||$)`)

// pipeDrain is how long a dead plugin's pipes are still read: what it wrote
// before it died arrives, and a child that keeps them open cannot keep the
// host waiting for an EOF that never comes.
const pipeDrain = 100 * time.Millisecond

// maxStdoutLine bounds a line a plugin prints to its raw stdout.
const maxStdoutLine = 64 << 10

// pluginRunner starts a plugin process for go-plugin. Unlike go-plugin's own:
//   - the plugin runs in its own process group, which is killed as a whole
//     when the plugin exits or is killed, so its children die with it;
//   - its exit is seen the moment the process exits (the host waits on the
//     process, not on EOF of its pipes, which a child may hold open);
//   - it drops whatever a plugin prints to stdout before its handshake line
//     (a driver's init that prints must not break the handshake).
type pluginRunner struct {
	cmd    *exec.Cmd
	stdout io.ReadCloser // the handshake line only, for go-plugin
	stderr *deadPipe
	rawOut *deadPipe
	logger *slog.Logger
	exited func(error)
	pid    int
	// noReaper: see Host.noReaper.
	noReaper bool
	// For the reaper: the file listing the plugin's ephemeral namespaces,
	// the plugin's name, and the command that cleans one up.
	ephemeralList, plugin string
	cleanup               []string

	done    chan struct{} // closed when the process has exited and been reaped
	waitErr error
	// files the parent closes once the child has them.
	childEnds []*os.File
	reaper    *reaper
	unreap    sync.Once

	// mu orders Start and a Kill from another goroutine: a Kill before
	// Start makes Start refuse, one after it kills the started group.
	mu      sync.Mutex
	started bool
	killed  bool
	// keepReaper leaves the reaper armed after the plugin's exit: the host
	// killed it as a last resort (Host.Kill) and exits, and the reaper
	// cleans up after both (Config.OrphanCleanup).
	keepReaper bool
}

func newRunner(cmd *exec.Cmd, logger *slog.Logger, exited func(error)) (*pluginRunner, error) {
	outR, outW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("plugin stdout: %w", err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return nil, fmt.Errorf("plugin stderr: %w", err)
	}
	// *os.File ends: exec starts no copying goroutine, so Wait returns when
	// the process exits, whoever else holds the pipes.
	cmd.Stdout, cmd.Stderr = outW, errW
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	r := &pluginRunner{
		cmd: cmd, logger: logger, exited: exited,
		stderr: &deadPipe{f: errR}, rawOut: &deadPipe{f: outR},
		done: make(chan struct{}), childEnds: []*os.File{outW, errW},
	}
	r.stdout = r.filterStdout(r.rawOut)
	return r, nil
}

// filterStdout passes on the handshake line, then ends: after its handshake
// a plugin's stdout reaches the host through go-plugin's gRPC stdio stream.
// Lines before the handshake, and lines a child writes to the inherited
// stdout after it, are logged and dropped.
func (r *pluginRunner) filterStdout(stdout io.Reader) io.ReadCloser {
	pr, pw := io.Pipe()
	go func() {
		br := bufio.NewReaderSize(stdout, 4096)
		shook := false
		for {
			line, err := readLine(br, maxStdoutLine)
			if line != "" || err == nil {
				switch {
				case !shook && handshakeLine.MatchString(line):
					shook = true
					_, _ = io.WriteString(pw, line+"\n")
					pw.Close()
				case !shook:
					r.logger.Warn("plugin printed to stdout before its handshake; ignored", "line", line)
				default:
					r.logger.Info("plugin stdout", "line", line)
				}
			}
			if err != nil {
				pw.CloseWithError(err)
				return
			}
		}
	}()
	return pr
}

// readLine reads a line without its newline, at most max bytes of it: the
// rest of a longer line is dropped and marked.
func readLine(br *bufio.Reader, max int) (string, error) {
	var line []byte
	truncated := false
	for {
		chunk, isPrefix, err := br.ReadLine()
		if err != nil {
			if len(line) > 0 || truncated {
				return finishLine(line, truncated), nil
			}
			return "", err
		}
		if room := max - len(line); room > 0 {
			line = append(line, chunk[:min(room, len(chunk))]...)
			if len(chunk) > room {
				truncated = true
			}
		} else if len(chunk) > 0 {
			truncated = true
		}
		if !isPrefix {
			return finishLine(line, truncated), nil
		}
	}
}

func finishLine(line []byte, truncated bool) string {
	if truncated {
		return string(line) + truncMarker
	}
	return string(line)
}

// truncMarker ends a line that was cut at its limit.
const truncMarker = " …[truncated]"

func (r *pluginRunner) Start(context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	err := errors.New("the start was cancelled")
	if !r.killed {
		err = r.cmd.Start()
	}
	for _, f := range r.childEnds {
		f.Close()
	}
	if err != nil {
		r.stderr.f.Close()
		r.rawOut.f.Close()
		return fmt.Errorf("start %s: %w", r.cmd.Args[0], err)
	}
	r.pid = r.cmd.Process.Pid
	r.started = true
	if r.noReaper {
		r.logger.Debug("plugin started without a reaper")
	} else if r.reaper, err = startReaper(r.pid, r.ephemeralList, r.plugin, r.cleanup); err != nil {
		r.logger.Warn("no reaper for the plugin: if the host is killed while the plugin is stopped, the plugin stays", "err", err)
	}
	go r.watch()
	return nil
}

// disarm stops the reaper: the host stopped the plugin itself, or lets it
// outlive the host on purpose (Detach).
func (r *pluginRunner) disarm() {
	r.unreap.Do(func() { r.reaper.disarm() })
}

// watch waits for the process to exit. Before reaping it, it kills the rest
// of its process group: while the plugin is an unreaped zombie its group ID
// cannot name another group. Then it gives the pipes pipeDrain to deliver
// what is left in them.
func (r *pluginRunner) watch() {
	waitExited(r.pid)
	r.killGroup()
	r.mu.Lock()
	keep := r.keepReaper
	r.mu.Unlock()
	if !keep {
		r.disarm()
	}
	r.waitErr = r.cmd.Wait()
	// Reported before done closes: whoever sees the process gone (State)
	// finds its death logged.
	if r.exited != nil {
		r.exited(r.waitErr)
	}
	close(r.done)
	deadline := time.Now().Add(pipeDrain)
	r.stderr.drain(deadline)
	r.rawOut.drain(deadline)
}

// waitExited blocks until process pid has exited, without reaping it.
func waitExited(pid int) {
	const pPID, wExited, wNoWait = 1, 4, 0x01000000
	var info [128]byte // siginfo_t
	for {
		_, _, errno := syscall.Syscall6(syscall.SYS_WAITID, pPID, uintptr(pid), uintptr(unsafe.Pointer(&info)), wExited|wNoWait, 0, 0)
		if errno != syscall.EINTR {
			return
		}
	}
}

// killGroup kills the plugin's whole process group.
func (r *pluginRunner) killGroup() {
	if r.pid > 0 {
		_ = syscall.Kill(-r.pid, syscall.SIGKILL)
	}
}

// Wait returns the process's exit once it has exited.
func (r *pluginRunner) Wait(context.Context) error {
	<-r.done
	return r.waitErr
}

// Kill kills the plugin's process group; its exit follows at once.
func (r *pluginRunner) Kill(context.Context) error {
	r.mu.Lock()
	r.killed = true
	started := r.started
	r.mu.Unlock()
	if !started {
		return nil
	}
	select {
	case <-r.done:
		return nil
	default:
	}
	// The leader is not reaped before watch has killed its group, so this
	// group ID is still the plugin's.
	if err := syscall.Kill(-r.pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("kill plugin %d: %w", r.pid, err)
	}
	return nil
}

// killLeavingReaper kills the plugin's group and leaves its reaper armed,
// to clean up once the host is gone.
func (r *pluginRunner) killLeavingReaper() {
	r.mu.Lock()
	r.keepReaper = true
	r.mu.Unlock()
	_ = r.Kill(context.Background())
}

// exitedCh is closed when the process has exited.
func (r *pluginRunner) exitedCh() <-chan struct{} { return r.done }

func (r *pluginRunner) Stdout() io.ReadCloser { return r.stdout }
func (r *pluginRunner) Stderr() io.ReadCloser { return r.stderr }
func (r *pluginRunner) Name() string          { return r.cmd.Args[0] }
func (r *pluginRunner) ID() string            { return strconv.Itoa(r.pid) }

func (r *pluginRunner) Diagnose(context.Context) string {
	return fmt.Sprintf("%s did not complete the plugin handshake: is it a pocketci-driver built with pluginsdk.Serve?", r.cmd.Args[0])
}

func (r *pluginRunner) PluginToHost(network, addr string) (string, string, error) {
	return network, addr, nil
}

func (r *pluginRunner) HostToPlugin(network, addr string) (string, string, error) {
	return network, addr, nil
}

// deadPipe is the read end of a plugin's pipe. Once the plugin has exited
// and the drain deadline passed, it reads as EOF, even when a child still
// holds the write end.
type deadPipe struct {
	f    *os.File
	mu   sync.Mutex
	dead bool
}

func (p *deadPipe) Read(b []byte) (int, error) {
	n, err := p.f.Read(b)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		p.mu.Lock()
		dead := p.dead
		p.mu.Unlock()
		if dead {
			return n, io.EOF
		}
	}
	return n, err
}

// drain makes reads end in EOF at deadline.
func (p *deadPipe) drain(deadline time.Time) {
	p.mu.Lock()
	p.dead = true
	p.mu.Unlock()
	_ = p.f.SetReadDeadline(deadline)
}

func (p *deadPipe) Close() error { return p.f.Close() }

//go:build linux

// Package shim is the first process of every native task. The driver starts
// its own executable again (/proc/self/exe) with argv[0] set to Arg0, and
// this package's init turns that process into the shim before main runs.
// The shim
//   - is a child subreaper (PR_SET_CHILD_SUBREAPER), so every descendant of
//     the task, also one that left the process group with setsid or set -m,
//     stays below it;
//   - runs the command as its child, and when that child exits, or when
//     the kill pipe (fd 5) reaches EOF (the driver closed it for Cleanup or
//     Close, or the driver died), kills every descendant with SIGKILL and
//     reaps it. Another driver instance stops the task by killing its main
//     process, whose pid the shim reports;
//   - copies the task's stdout and stderr from pipes into the log files it
//     was given as its own stdout and stderr, so that a failed write (a full
//     disk) is seen: the task is then killed and the failure reported;
//   - reports on a control pipe (fd 3): "pid <main pid>" once the command
//     started, and at the end "<exit code>" or "<exit code> <failure>";
//   - makes the task's bind mounts (nested volumes) in its own mount
//     namespace, and starts the command as the task's user in the task's
//     working directory (see Spec). A command that is not there is the
//     task's failure: a line on its stderr and exit 127, as in a shell.
//
// The stdin pipe is the command's own fd 0; the shim does not touch it. The
// command gets fds 0, 1 and 2 and nothing else: every other descriptor is
// marked close-on-exec first.
//
// The package imports only os and syscall, on purpose: Go runs package
// inits in import path order among the packages that are ready, so a
// package whose imports are all initialized early (os needs them) takes
// over before the rest of a large binary (gRPC, protobuf, even strconv and
// os/signal) initializes. That is why there is no signal handler: the kill
// pipe does its work.
package shim

import (
	"os"
	"sync"
	"syscall"
)

// Arg0 is the argv[0] that makes a process the shim.
const Arg0 = "pocketci-native-shim"

// Descriptors the driver hands the shim besides 0, 1 and 2.
const (
	ControlFD = 3 // write end of the control pipe
	LockFD    = 4 // the task's lock file, held while the task lives
	KillFD    = 5 // read end of the kill pipe: EOF kills the task
)

// prSetChildSubreaper is PR_SET_CHILD_SUBREAPER from <linux/prctl.h>.
const prSetChildSubreaper = 36

// raceEnv is what a -race build adds to the shim's environment (and the
// shim takes out again before it starts the command).
const raceEnv = "GORACE=atexit_sleep_ms=0"

func init() {
	// argv: Arg0, then what Args wrote (see Args).
	if len(os.Args) >= 1 && os.Args[0] == Arg0 {
		os.Exit(run(os.Args[1:]))
	}
}

// ExitCode is a wait status as an exit code: 128+N for a signal N.
func ExitCode(ws syscall.WaitStatus) int {
	switch {
	case ws.Signaled():
		return 128 + int(ws.Signal())
	case ws.Exited():
		return ws.ExitStatus()
	}
	return -1
}

// run runs the command that args (Args's argv without Arg0) describe,
// without the environment entry to drop, and returns the shim's exit code.
// It writes "<code>\n" or "<code> <failure>\n" to the control pipe.
func run(args []string) int {
	ctl := os.NewFile(ControlFD, "control")
	report := func(code int, failure string) int {
		line := itoa(code)
		if failure != "" {
			line += " " + oneLine(failure)
		}
		_, _ = ctl.WriteString(line + "\n")
		return code
	}
	drop, s, ok := parseArgs(args)
	if !ok {
		return report(126, "shim: malformed arguments")
	}
	if failure := setUp(s); failure != "" {
		return report(126, failure)
	}
	if s.Path == "" {
		return report(startFailed(s, nil))
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		return report(126, "shim: stdout pipe: "+err.Error())
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		return report(126, "shim: stderr pipe: "+err.Error())
	}
	for _, kv := range os.Environ() {
		if kv != drop {
			s.Env = append(s.Env, kv)
		}
	}
	proc, err := os.StartProcess(s.Path, s.Args, procAttr(s, []*os.File{os.Stdin, outW, errW}))
	if err != nil {
		return report(startFailed(s, err))
	}
	_, _ = ctl.WriteString("pid " + itoa(proc.Pid) + "\n")
	_ = outW.Close()
	_ = errW.Close()
	_ = os.Stdin.Close()
	return report(supervise(proc.Pid, outR, errR))
}

// setUp makes the shim the subreaper of the task's tree, places its binds
// and keeps the shim's own descriptors from the task; a failure is why.
func setUp(s Spec) string {
	if _, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, prSetChildSubreaper, 1, 0); errno != 0 {
		return "shim: set child subreaper: " + errno.Error()
	}
	if failure := bindAll(s.Binds); failure != "" {
		return failure
	}
	if err := closeOnExecAbove2(); err != nil {
		return "shim: mark descriptors close-on-exec: " + err.Error()
	}
	return ""
}

// supervisor is the shim's watch over a running task: once the main
// process exits, the output is lost, or the driver closes the kill pipe,
// every descendant is killed.
type supervisor struct {
	mu      sync.Mutex
	failure string // the first reason the task's tree was killed, if any
	killing bool
}

// supervise copies the task's output to the shim's stdout and stderr,
// reaps every descendant, and returns main's exit code and any failure.
func supervise(main int, outR, errR *os.File) (int, string) {
	sv := &supervisor{}
	var copies sync.WaitGroup
	for _, c := range []struct {
		name string
		r, w *os.File
	}{{"stdout", outR, os.Stdout}, {"stderr", errR, os.Stderr}} {
		copies.Add(1)
		go func() {
			defer copies.Done()
			sv.copyOutput(c.name, c.r, c.w)
		}()
	}
	go func() {
		drain(os.NewFile(KillFD, "kill")) // until EOF: the driver closed it, or died
		sv.killAll("")
	}()
	code := sv.reapAll(main)
	copies.Wait()
	sv.mu.Lock()
	defer sv.mu.Unlock()
	if sv.failure != "" && code == 0 {
		code = 1 // never success with the output lost
	}
	return code, sv.failure
}

// killAll kills every descendant, now and as long as any is left.
func (sv *supervisor) killAll(why string) {
	sv.mu.Lock()
	defer sv.mu.Unlock()
	if sv.failure == "" {
		sv.failure = why
	}
	sv.killing = true
	killChildren()
}

// copyOutput copies one of the task's streams; a failed write kills the
// task, since its output would be lost.
func (sv *supervisor) copyOutput(name string, r, w *os.File) {
	if err := copyAll(w, r); err != nil {
		sv.killAll("output lost: write " + name + " log: " + err.Error())
		drain(r) // let the dying writers finish
	}
	_ = r.Close()
}

// reapAll waits for every descendant (orphans are reparented to the shim)
// and returns main's exit code, -1 if it was never seen.
func (sv *supervisor) reapAll(main int) int {
	code := -1
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, 0, nil)
		if err == syscall.EINTR {
			continue
		}
		if err != nil { // ECHILD: no descendant is left
			return code
		}
		sv.mu.Lock()
		if pid == main {
			code = ExitCode(ws)
			sv.killing = true
		}
		if sv.killing {
			killChildren()
		}
		sv.mu.Unlock()
	}
}

// copyAll copies r to w until EOF and returns the first write error.
func copyAll(w, r *os.File) error {
	buf := make([]byte, 64<<10)
	for {
		n, rerr := r.Read(buf)
		if n > 0 {
			if _, err := w.Write(buf[:n]); err != nil {
				return err
			}
		}
		if rerr != nil {
			return nil // EOF, or the pipe is gone: nothing more to copy
		}
	}
}

// drain reads r to EOF and drops what it reads.
func drain(r *os.File) {
	buf := make([]byte, 64<<10)
	for {
		if _, err := r.Read(buf); err != nil {
			return
		}
	}
}

// killChildren sends SIGKILL to every child of this process. A subreaper
// inherits the children of what it kills, so calling it after every reap
// takes the whole tree down, level by level.
func killChildren() {
	for _, pid := range children() {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

// children lists the children of every thread of this process.
func children() []int {
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return nil
	}
	var out []int
	for _, t := range tasks {
		b, err := os.ReadFile("/proc/self/task/" + t.Name() + "/children")
		if err != nil {
			continue
		}
		pid := 0
		for _, c := range b {
			if c >= '0' && c <= '9' {
				pid = pid*10 + int(c-'0')
			} else if pid > 0 {
				out = append(out, pid)
				pid = 0
			}
		}
		if pid > 0 {
			out = append(out, pid)
		}
	}
	return out
}

// itoa formats n in decimal.
func itoa(n int) string {
	if n < 0 {
		return "-" + itoa(-n)
	}
	var b [20]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
		if n == 0 {
			return string(b[i:])
		}
	}
}

// oneLine replaces newlines in s with spaces.
func oneLine(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c == '\n' || c == '\r' {
			b[i] = ' '
		}
	}
	return string(b)
}

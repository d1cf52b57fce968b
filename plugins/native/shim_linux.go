//go:build linux

package native

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// The shim is the first process of every task: the driver starts its own
// executable again (/proc/self/exe) with argv[0] set to shimArg0, and the
// package's init turns that process into the shim before main runs. The
// shim
//   - is a child subreaper (PR_SET_CHILD_SUBREAPER), so every descendant of
//     the task, also one that left the process group with setsid or set -m,
//     stays below it;
//   - runs the command as its child, and when that child exits (or the shim
//     gets SIGTERM: Cleanup, Close, or the driver's death through
//     Pdeathsig) kills every descendant with SIGKILL and reaps it;
//   - copies the task's stdout and stderr from pipes into the log files it
//     was given, so that a failed write (a full disk) is seen: the task is
//     then killed and the failure is reported, never lost;
//   - reports the exit code and any failure on a control pipe (fd 3).
//
// The stdin pipe is the command's own fd 0; the shim does not touch it.
const shimArg0 = "pocketci-native-shim"

// Descriptors the driver hands the shim besides 0, 1 and 2.
const (
	shimControlFD = 3 // write end of the control pipe
	shimLockFD    = 4 // the task's lock file, held while the task lives
)

// prSetChildSubreaper is PR_SET_CHILD_SUBREAPER from <linux/prctl.h>.
const prSetChildSubreaper = 36

// shimRaceEnv is what a -race build adds to the shim's environment (and the
// shim takes out again before it starts the command).
const shimRaceEnv = "GORACE=atexit_sleep_ms=0"

func init() {
	// argv: shimArg0, "drop" (an environment entry the driver added for
	// the shim alone, or "-"), the command's path, its argv.
	if len(os.Args) >= 4 && os.Args[0] == shimArg0 {
		os.Exit(shimMain(os.Args[1], os.Args[2], os.Args[3:]))
	}
}

// shimArgs is the shim's argv and environment for a command path with
// argv args and environment env.
func shimArgs(path string, args, env []string) (argv, shimEnv []string) {
	drop := "-"
	if raceEnabled && !slices.ContainsFunc(env, func(kv string) bool { return strings.HasPrefix(kv, "GORACE=") }) {
		drop = shimRaceEnv
		env = append(slices.Clip(env), shimRaceEnv)
	}
	return append([]string{shimArg0, drop, path}, args...), env
}

// shimMain runs the command path with argv args and returns the shim's exit
// code. It writes "<code>\n" or "<code> <failure>\n" to the control pipe.
func shimMain(drop, path string, args []string) int {
	ctl := os.NewFile(shimControlFD, "control")
	report := func(code int, failure string) int {
		line := strconv.Itoa(code)
		if failure != "" {
			line += " " + strings.ReplaceAll(failure, "\n", " ")
		}
		_, _ = io.WriteString(ctl, line+"\n")
		return code
	}
	if _, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, prSetChildSubreaper, 1, 0); errno != 0 {
		return report(126, fmt.Sprintf("shim: set child subreaper: %v", errno))
	}
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)

	outR, outW, err := os.Pipe()
	if err != nil {
		return report(126, fmt.Sprintf("shim: stdout pipe: %v", err))
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		return report(126, fmt.Sprintf("shim: stderr pipe: %v", err))
	}
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool { return kv == drop })
	cmd := &exec.Cmd{Path: path, Args: args, Env: env, Stdin: os.Stdin, Stdout: outW, Stderr: errW}
	if err := cmd.Start(); err != nil {
		return report(127, fmt.Sprintf("start %q: %v", path, err))
	}
	_ = outW.Close()
	_ = errW.Close()
	_ = os.Stdin.Close()
	main := cmd.Process.Pid

	var (
		mu      sync.Mutex
		failure string
		killing bool
	)
	killAll := func(why string) {
		mu.Lock()
		defer mu.Unlock()
		if failure == "" {
			failure = why
		}
		killing = true
		killChildren()
	}
	var copies sync.WaitGroup
	for _, s := range []struct {
		name string
		r    *os.File
		w    *os.File
	}{{"stdout", outR, os.Stdout}, {"stderr", errR, os.Stderr}} {
		copies.Go(func() {
			if _, err := io.Copy(s.w, s.r); err != nil {
				killAll(fmt.Sprintf("output lost: write %s log: %v", s.name, err))
				_, _ = io.Copy(io.Discard, s.r) // let the dying writers finish
			}
			_ = s.r.Close()
		})
	}
	go func() {
		<-term
		killAll("")
	}()

	code := -1
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, 0, nil)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil { // ECHILD: no descendant is left
			break
		}
		if pid == main {
			code = exitCode(ws)
			mu.Lock()
			killing = true
			mu.Unlock()
		}
		mu.Lock()
		if killing {
			killChildren()
		}
		mu.Unlock()
	}
	copies.Wait()
	_ = os.Stdout.Sync()
	_ = os.Stderr.Sync()
	mu.Lock()
	defer mu.Unlock()
	if failure != "" && code == 0 {
		code = 1 // never success with the output (or input) lost
	}
	return report(code, failure)
}

// exitCode is a wait status as an exit code: 128+N for a signal N.
func exitCode(ws syscall.WaitStatus) int {
	switch {
	case ws.Signaled():
		return 128 + int(ws.Signal())
	case ws.Exited():
		return ws.ExitStatus()
	}
	return -1
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
	tasks, _ := filepath.Glob("/proc/self/task/*/children")
	var out []int
	for _, f := range tasks {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, field := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(field); err == nil {
				out = append(out, pid)
			}
		}
	}
	return out
}

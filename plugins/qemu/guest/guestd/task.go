package main

import (
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jtarchie/pocketci/plugins/qemu/guestproto"
)

// Exit codes of a task that did not start, as a shell would give them.
const (
	codeCannotRun = 126 // setup failed, or the command is not executable
	codeNotFound  = 127 // the command is not there
	codeCopyFail  = 125 // the task succeeded but its output did not reach the share
	codeKilled    = 137 // killed before it started, as if by SIGKILL
)

// task is one running task.
type task struct {
	id     uint64
	s      *guestproto.Start
	cgroup string

	rootDir string // the mount point of the task's root, removed at its end

	mu     sync.Mutex
	pid    int
	killed bool
}

func newTask(id uint64, s *guestproto.Start) *task {
	return &task{id: id, s: s, cgroup: "/sys/fs/cgroup/slot-" + strconv.Itoa(s.Slot)}
}

// kill kills the task and everything it started; a task that has not
// forked yet is killed as soon as it has.
func (t *task) kill() {
	t.mu.Lock()
	t.killed = true
	started := t.pid != 0
	t.mu.Unlock()
	if started {
		t.killCgroup()
	}
}

func (t *task) killCgroup() {
	if err := os.WriteFile(t.cgroup+"/cgroup.kill", []byte("1"), 0); err != nil {
		log.Printf("task %d: cgroup.kill: %v", t.id, err)
	}
}

// run runs the task to its end and returns its exit code. A task that
// could not start returns the reason too, after writing it to the task's
// stderr file.
func (t *task) run(d *daemon) (int, error) {
	s := t.s
	if len(s.Argv) == 0 {
		return codeCannotRun, errors.New("no command")
	}
	// The mount point of an image task's root goes once the task ended.
	defer func() {
		if t.rootDir != "" {
			_ = os.Remove(t.rootDir)
		}
	}()
	// The task's stdio are pipes, as on every platform. Each output's file
	// on the share is opened by its copier while the task starts (a 9p
	// round trip overlaps the fork) and closed after the copy is done, off
	// the task's path: 9p writes are synchronous, so the host has every
	// byte once the copy returns.
	outR, outW, err := os.Pipe()
	if err != nil {
		return codeCannotRun, err
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return codeCannotRun, err
	}
	var copies sync.WaitGroup
	var copyErr [2]error
	for i, src := range []*os.File{outR, errR} {
		copies.Add(1)
		go func() {
			name := [2]string{"stdout", "stderr"}[i]
			defer src.Close()
			dst, err := os.OpenFile(filepath.Join(s.Dir, name), os.O_WRONLY|os.O_APPEND, 0)
			if err == nil {
				_, err = io.Copy(dst, src)
			}
			if err != nil {
				copyErr[i] = fmt.Errorf("copying the task's %s to the share failed: %w", name, err)
				_, _ = io.Copy(io.Discard, src) // the task must not block on a full pipe
			}
			copies.Done()
			if dst != nil {
				dst.Close()
			}
		}()
	}
	// A task that does not start says why on its stderr.
	fail := func(code int, err error) (int, error) {
		if err != nil {
			fmt.Fprintf(errW, "pocketci: %v\n", err)
		}
		outW.Close()
		errW.Close()
		copies.Wait()
		return code, err
	}
	cg, err := d.prepareCgroup(t.cgroup, s)
	if err != nil {
		return fail(codeCannotRun, err)
	}
	var inR, inW *os.File
	if s.Stdin {
		if inR, inW, err = os.Pipe(); err != nil {
			return fail(codeCannotRun, err)
		}
	}
	stdin := d.devNull
	if inR != nil {
		stdin = inR
	}
	pid, err := t.fork(d, cg.fd, []*os.File{stdin, outW, errW})
	if inR != nil {
		inR.Close()
	}
	if err != nil {
		if inW != nil {
			inW.Close()
		}
		code := codeCannotRun
		var se *startError
		if errors.As(err, &se) {
			code = se.code
		}
		if code == codeKilled {
			return fail(code, nil) // Cleanup came first: nothing to report
		}
		return fail(code, err)
	}
	outW.Close()
	errW.Close()

	stopStdin := make(chan struct{})
	var feeder sync.WaitGroup
	if inW != nil {
		feeder.Add(1)
		go func() {
			defer feeder.Done()
			feedStdin(s.Dir, inW, stopStdin)
		}()
	}

	code := wait(pid)
	// What the task left running dies with it, as under a container's init.
	if cg.populated() {
		t.killCgroup()
		cg.waitEmpty()
	}
	close(stopStdin)
	feeder.Wait()
	copies.Wait()
	if err := errors.Join(copyErr[:]...); err != nil && code == 0 {
		// Said on stderr where it still can be, and in the exit event.
		if f, ferr := os.OpenFile(filepath.Join(s.Dir, "stderr"), os.O_WRONLY|os.O_APPEND, 0); ferr == nil {
			fmt.Fprintf(f, "pocketci: %v\n", err)
			f.Close()
		}
		return codeCopyFail, err
	}
	return code, nil
}

// startError is a failure to start with the exit code a shell would give.
type startError struct {
	code int
	err  error
}

func (e *startError) Error() string { return e.err.Error() }
func (e *startError) Unwrap() error { return e.err }

// fork starts the task's process in its cgroup, with its root, user, working
// directory and environment, and files as its fds 0, 1 and 2.
func (t *task) fork(d *daemon, cgroupFD int, files []*os.File) (int, error) {
	s := t.s
	attr := &syscall.SysProcAttr{Setsid: true, UseCgroupFD: true, CgroupFD: cgroupFD}
	dir := s.WorkDir
	if dir == "" {
		dir = filepath.Join(s.Dir, "work")
	}
	ownMounts := s.Root == "" && len(s.Binds) > 0
	if s.Root == "" && !ownMounts {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return 0, fmt.Errorf("working directory: %w", err)
		}
	}
	rootPath := "/"
	if s.Root != "" && s.Sandbox != "" {
		// A sandbox's root stays mounted here between its tasks; each
		// task gets a copy of this namespace, chrooted there.
		d.mountMu.Lock()
		defer d.mountMu.Unlock()
		r, err := d.sandboxRoot(s)
		if err != nil {
			return 0, err
		}
		rootPath = r.merged
		if s.WorkDir == "" {
			dir = "/"
		}
		attr.Chroot = r.merged
		attr.Cloneflags = syscall.CLONE_NEWNS
	} else if s.Root != "" {
		// The task's root is mounted here, copied into the task's own
		// mount namespace by the fork, and detached here at once: it
		// vanishes with the task, and no other task's namespace holds it.
		d.mountMu.Lock()
		defer d.mountMu.Unlock()
		r, err := mountRoot(t.id, s)
		if err != nil {
			return 0, err
		}
		defer r.detach()
		t.rootDir = r.base
		rootPath = r.merged
		if s.WorkDir == "" {
			dir = "/"
		}
		attr.Chroot = r.merged
		attr.Cloneflags = syscall.CLONE_NEWNS
	}
	root, err := openRoot(rootPath)
	if err != nil {
		return 0, err
	}
	defer syscall.Close(root)
	cred, err := lookupUser(root, s.User)
	if err != nil {
		return 0, err
	}
	attr.Credential = cred
	argv0, err := lookPath(root, envPath(s.Env), s.Argv[0])
	if err != nil {
		return 0, err
	}
	fds := make([]uintptr, len(files))
	for i, f := range files {
		fds[i] = f.Fd()
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.killed {
		return 0, &startError{codeKilled, errors.New("killed before it started")}
	}
	var pid int
	forkExec := func() {
		pid, err = syscall.ForkExec(argv0, s.Argv, &syscall.ProcAttr{Dir: dir, Env: s.Env, Files: fds, Sys: attr})
	}
	switch {
	case ownMounts:
		if merr := forkWithBinds(s, dir, forkExec); merr != nil {
			return 0, &startError{codeCannotRun, merr}
		}
	case s.Privileged:
		forkExec()
	default:
		d.unpriv.run(forkExec)
	}
	if err != nil {
		code := codeCannotRun
		if errors.Is(err, syscall.ENOENT) {
			code = codeNotFound
		}
		return 0, &startError{code, fmt.Errorf("exec %s: %w", s.Argv[0], err)}
	}
	t.pid = pid
	return pid, nil
}

// wait waits for pid and returns its exit code, 128+N for signal N.
func wait(pid int) int {
	for {
		var ws syscall.WaitStatus
		_, err := syscall.Wait4(pid, &ws, 0, nil)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil {
			log.Printf("wait for %d: %v", pid, err)
			return 255
		}
		if ws.Signaled() {
			return 128 + int(ws.Signal())
		}
		return ws.ExitStatus()
	}
}

// envPath is the PATH in env.
func envPath(env []string) string {
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			return v
		}
	}
	return ""
}

// prepareCgroup makes the slot's cgroup, sets the task's limits on it (only
// when they changed since the slot's last task) and opens it for the fork.
func (d *daemon) prepareCgroup(dir string, s *guestproto.Start) (*slot, error) {
	mem, weight := "max", "100"
	if s.Memory > 0 {
		mem = strconv.FormatInt(s.Memory, 10)
	}
	if s.CPUWeight > 0 {
		weight = strconv.FormatInt(s.CPUWeight, 10)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.slots == nil {
		d.slots = make(map[string]*slot)
	}
	sl := d.slots[dir]
	if sl == nil {
		if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return nil, fmt.Errorf("create the task's cgroup: %w", err)
		}
		fd, err := syscall.Open(dir, syscall.O_DIRECTORY|syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("open the task's cgroup: %w", err)
		}
		events, err := syscall.Open(dir+"/cgroup.events", syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
		if err != nil {
			_ = syscall.Close(fd)
			return nil, fmt.Errorf("open the task's cgroup.events: %w", err)
		}
		sl = &slot{dir: dir, fd: fd, events: events}
		d.slots[dir] = sl
	}
	if sl.memory != mem {
		if err := os.WriteFile(dir+"/memory.max", []byte(mem), 0); err != nil {
			return nil, fmt.Errorf("set memory.max: %w", err)
		}
		sl.memory = mem
	}
	if sl.weight != weight {
		if err := os.WriteFile(dir+"/cpu.weight", []byte(weight), 0); err != nil {
			return nil, fmt.Errorf("set cpu.weight: %w", err)
		}
		sl.weight = weight
	}
	return sl, nil
}

// slot is a cgroup kept open across the tasks that use it.
type slot struct {
	dir            string
	fd, events     int
	memory, weight string
}

// populated reports whether a process is left in the slot's cgroup (its
// cgroup.events, kept open).
func (sl *slot) populated() bool {
	var buf [64]byte
	n, err := syscall.Pread(sl.events, buf[:], 0)
	return err != nil || strings.Contains(string(buf[:max(n, 0)]), "populated 1")
}

// waitEmpty waits, bounded, until the killed cgroup has no process left.
func (sl *slot) waitEmpty() {
	deadline := time.Now().Add(10 * time.Second)
	for wait := 100 * time.Microsecond; sl.populated(); wait = min(wait*2, 20*time.Millisecond) {
		if time.Now().After(deadline) {
			log.Printf("%s: processes left after cgroup.kill", sl.dir)
			return
		}
		time.Sleep(wait)
	}
}

//go:build linux

package native

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// Each task directory has a lock file. The driver instance that starts the
// task takes an exclusive flock(2) on it first and hands the descriptor to
// the task's shim, so the lock is held for as long as the task lives, in
// whichever process. Another driver instance of the namespace, in this
// process or another host's, that finds the lock held attaches to the
// running task instead of starting (or destroying) it. The lock goes away
// with the last process holding it, also when they die without a word.
const (
	lockFile = "lock"
	pidFile  = "pid" // "<main pid> <start time>": what to kill to stop the task
)

// lockTask takes the task lock of dir without waiting. It returns (nil,
// nil) when another process holds it. A lock file that was renamed away (a
// Cleanup removing the directory) while we waited is not a lock: try again.
// With create false (a lookup) it creates nothing: a lock file that is not
// there gives an error satisfying errors.Is(err, fs.ErrNotExist).
func lockTask(dir string, create bool) (*os.File, error) {
	flags := os.O_RDWR | syscall.O_CLOEXEC
	if create {
		flags |= os.O_CREATE
	}
	for range 10 {
		f, err := os.OpenFile(filepath.Join(dir, lockFile), flags, 0o644)
		if err != nil {
			return nil, fmt.Errorf("open task lock: %w", err)
		}
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			_ = f.Close()
			if errors.Is(err, syscall.EWOULDBLOCK) {
				return nil, nil
			}
			return nil, fmt.Errorf("lock task: %w", err)
		}
		if sameFile(f, filepath.Join(dir, lockFile)) {
			return f, nil
		}
		_ = f.Close()
		if !create {
			continue
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("create task directory: %w", err)
		}
	}
	return nil, errors.New("lock task: the lock file keeps being replaced")
}

// lockHeld reports whether some process holds the task lock of dir.
func lockHeld(dir string) bool {
	f, err := os.Open(filepath.Join(dir, lockFile))
	if err != nil {
		return false
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_SH|syscall.LOCK_NB); err != nil {
		return errors.Is(err, syscall.EWOULDBLOCK)
	}
	return false
}

func sameFile(f *os.File, path string) bool {
	a, err := f.Stat()
	if err != nil {
		return false
	}
	b, err := os.Stat(path)
	return err == nil && os.SameFile(a, b)
}

// writePidFile records the task's main pid and its start time in dir.
func writePidFile(dir string, pid int) error {
	start, err := startTime(pid)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, pidFile), []byte(fmt.Sprintf("%d %d\n", pid, start)), 0o644)
}

// terminateRecorded sends SIGKILL to the task's main process recorded in
// dir, when that process still runs (same pid and start time): its shim
// then kills the rest of the task's tree.
func terminateRecorded(dir string) {
	b, err := os.ReadFile(filepath.Join(dir, pidFile))
	if err != nil {
		return
	}
	var pid, start uint64
	if _, err := fmt.Sscan(string(b), &pid, &start); err != nil || pid == 0 {
		return
	}
	if now, err := startTime(int(pid)); err == nil && now == start {
		_ = syscall.Kill(int(pid), syscall.SIGKILL)
	}
}

// startTime is field 22 of /proc/PID/stat: when the process started, in
// clock ticks since boot. With the pid it names one process for good.
func startTime(pid int) (uint64, error) {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("parse /proc/%d/stat", pid)
	}
	fields := strings.Fields(s[i+1:]) // field 3 (state) is fields[0]
	if len(fields) < 20 {
		return 0, fmt.Errorf("parse /proc/%d/stat", pid)
	}
	return strconv.ParseUint(fields[19], 10, 64)
}

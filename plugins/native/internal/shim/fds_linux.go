//go:build linux

package shim

import (
	"os"
	"syscall"
)

// Linux's close_range(2), whose number is the same on every architecture.
const (
	sysCloseRange     = 436
	closeRangeCloExec = 4 // CLOSE_RANGE_CLOEXEC
)

// closeOnExecAbove2 marks every descriptor above 2 close-on-exec, so that
// the command starts with 0, 1 and 2 only: not the shim's control, lock and
// kill descriptors, nor what the driver's own process inherited without
// close-on-exec (a shell's or CI runner's stray descriptors), which
// exec.Cmd hands down. The shim keeps using them itself.
func closeOnExecAbove2() error {
	if _, _, errno := syscall.RawSyscall(sysCloseRange, 3, ^uintptr(0)>>32, closeRangeCloExec); errno == 0 {
		return nil
	}
	return closeOnExecFromProc() // before Linux 5.11
}

// closeOnExecFromProc marks every descriptor above 2 that /proc/self/fd
// lists close-on-exec, one by one.
func closeOnExecFromProc() error {
	dir, err := os.Open("/proc/self/fd")
	if err != nil {
		return err
	}
	defer dir.Close()
	names, err := dir.Readdirnames(-1)
	if err != nil {
		return err
	}
	for _, name := range names {
		fd := 0
		for _, c := range name {
			fd = fd*10 + int(c-'0')
		}
		if fd > 2 {
			syscall.CloseOnExec(fd)
		}
	}
	return nil
}

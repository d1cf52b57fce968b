package mydriver

import (
	"fmt"
	"syscall"
)

// Linux's close_range(2) (5.11 and later), whose number is the same on
// every architecture.
const (
	sysCloseRange     = 436
	closeRangeCloExec = 4 // CLOSE_RANGE_CLOEXEC
)

// closeOnExecAbove2 marks every descriptor of this process above 2
// close-on-exec, so that a task starts with 0, 1 and 2 only. Go opens
// everything close-on-exec, but a descriptor the process inherited without
// it (a shell's, a CI runner's) stays open across exec, and exec.Cmd hands
// it to every child: the task would see it. Descriptors a program passes to
// a child on purpose (exec.Cmd.ExtraFiles) are unaffected: they are copied
// into the child whatever their flag.
func closeOnExecAbove2() error {
	if _, _, errno := syscall.RawSyscall(sysCloseRange, 3, ^uintptr(0)>>32, closeRangeCloExec); errno != 0 {
		return fmt.Errorf("mark descriptors close-on-exec: close_range: %w", errno)
	}
	return nil
}

package main

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
)

// defaultCaps is the capability set Docker and containerd give a container
// that is not privileged (moby's oci/caps/defaults.go): a root task in the
// guest gets no more than a root task in a container. A privileged task
// keeps every capability.
var defaultCaps = []uintptr{
	0,  // CAP_CHOWN
	1,  // CAP_DAC_OVERRIDE
	3,  // CAP_FOWNER
	4,  // CAP_FSETID
	5,  // CAP_KILL
	6,  // CAP_SETGID
	7,  // CAP_SETUID
	8,  // CAP_SETPCAP
	10, // CAP_NET_BIND_SERVICE
	13, // CAP_NET_RAW
	18, // CAP_SYS_CHROOT
	27, // CAP_MKNOD
	29, // CAP_AUDIT_WRITE
	31, // CAP_SETFCAP
}

const prCapbsetDrop = 24

// forker runs forks on one OS thread whose capability bounding set is
// defaultCaps: a process forked there, and everything it runs, can never
// gain another capability. The thread keeps its own effective set, so the
// fork itself may still make a mount namespace and chroot. The thread is
// never unlocked: the Go runtime starts new threads from a clean template
// thread, never from a locked one, so no other goroutine runs on it.
type forker struct {
	calls chan func()
}

// newUnprivilegedForker starts the thread and drops its bounding set.
func newUnprivilegedForker() (*forker, error) {
	f := &forker{calls: make(chan func())}
	ready := make(chan error)
	go func() {
		runtime.LockOSThread()
		err := dropBoundingSet()
		ready <- err
		if err != nil {
			return // the goroutine's end takes the thread with it
		}
		for call := range f.calls {
			call()
		}
	}()
	if err := <-ready; err != nil {
		return nil, err
	}
	return f, nil
}

// run calls fn on the forker's thread.
func (f *forker) run(fn func()) {
	done := make(chan struct{})
	f.calls <- func() {
		defer close(done)
		fn()
	}
	<-done
}

// dropBoundingSet drops every capability but defaultCaps from the calling
// thread's bounding set.
func dropBoundingSet() error {
	data, err := os.ReadFile("/proc/sys/kernel/cap_last_cap")
	if err != nil {
		return fmt.Errorf("capabilities: %w", err)
	}
	last, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil {
		return fmt.Errorf("capabilities: cap_last_cap %q: %w", data, err)
	}
	keep := make(map[uintptr]bool, len(defaultCaps))
	for _, c := range defaultCaps {
		keep[c] = true
	}
	for c := uintptr(0); c <= uintptr(last); c++ {
		if keep[c] {
			continue
		}
		if _, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, prCapbsetDrop, c, 0); errno != 0 {
			return fmt.Errorf("capabilities: drop %d from the bounding set: %w", c, errno)
		}
	}
	return nil
}

package main

import (
	"fmt"
	"os"
	"runtime"
	"syscall"

	"github.com/jtarchie/pocketci/plugins/qemu/guestproto"
)

// forkWithBinds runs forkExec for a task in the guest's own userland that
// mounts volumes: on a fresh OS thread that unshares its mount namespace,
// binds s.Binds there (in order, so an inner mount lands inside the outer
// volume), makes the working directory dir and, for a task that is not
// privileged, drops the bounding set as the unprivileged forker's thread
// did. The task inherits the thread's namespace, so its mounts are its own:
// no other task and not the daemon ever sees them. The thread is never
// unlocked: it ends with the goroutine, and its namespace lives on only in
// the task.
func forkWithBinds(s *guestproto.Start, dir string, forkExec func()) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		errc <- bindAndFork(s, dir, forkExec)
	}()
	return <-errc
}

func bindAndFork(s *guestproto.Start, dir string, forkExec func()) error {
	if err := syscall.Unshare(syscall.CLONE_NEWNS); err != nil {
		return fmt.Errorf("the task's mount namespace: %w", err)
	}
	if err := syscall.Mount("", "/", "", syscall.MS_REC|syscall.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("the task's mount namespace: make / private: %w", err)
	}
	for _, b := range s.Binds {
		if err := os.MkdirAll(b.Dst, 0o755); err != nil {
			return fmt.Errorf("mount point %s: %w", b.Dst, err)
		}
		if err := syscall.Mount(b.Src, b.Dst, "", syscall.MS_BIND|syscall.MS_REC, ""); err != nil {
			return fmt.Errorf("bind %s at %s: %w", b.Src, b.Dst, err)
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("working directory: %w", err)
	}
	if !s.Privileged {
		if err := dropBoundingSet(); err != nil {
			return err
		}
	}
	forkExec()
	return nil
}

package pluginproc

import (
	"os"
	"strconv"
	"syscall"
)

// ExeFDEnv tells a plugin that one of its fds (named by the value) is the
// open file of its own binary, which the host ran as /proc/self/fd/N so
// that the checked file is the one that runs.
const ExeFDEnv = "POCKETCI_PLUGIN_EXE_FD"

// CloseInheritedOnExec marks every fd above stderr that this process
// inherited close-on-exec, and removes ExeFDEnv from the environment. Go
// passes an inherited fd that is not close-on-exec to every process it
// starts; the host calls this so that its plugins start with fds 0-2 only,
// and Serve so that a driver's tasks do (the host's exe fd included).
func CloseInheritedOnExec() {
	_ = os.Unsetenv(ExeFDEnv)
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return
	}
	for _, e := range entries {
		if fd, err := strconv.Atoi(e.Name()); err == nil && fd > 2 {
			syscall.CloseOnExec(fd)
		}
	}
}

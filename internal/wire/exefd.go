package wire

import (
	"os"
	"strconv"
	"syscall"
)

// ExeFDEnv tells a plugin that one of its fds (named by the value) is the
// open file of its own binary, which the host ran as /proc/self/fd/N so
// that the checked file is the one that runs. Serve marks that fd
// close-on-exec, so that the tasks and helpers the driver starts do not
// inherit it.
const ExeFDEnv = "POCKETCI_PLUGIN_EXE_FD"

// closeExeFDOnExec marks the fd ExeFDEnv names close-on-exec and removes the
// variable from the environment, which the driver's processes may inherit.
// A value that is not an fd above stderr is ignored.
func closeExeFDOnExec() {
	v, ok := os.LookupEnv(ExeFDEnv)
	if !ok {
		return
	}
	_ = os.Unsetenv(ExeFDEnv)
	fd, err := strconv.Atoi(v)
	if err != nil || fd <= 2 {
		return
	}
	syscall.CloseOnExec(fd)
}

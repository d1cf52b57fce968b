package host

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// orphanGrace is how long a plugin whose host died without stopping it has
// to close its drivers (it notices within half a second) before the reaper
// kills its process group, stopped or not.
const orphanGrace = 5 * time.Second

// reaperScript waits for EOF on stdin, which comes when the host process
// dies (it holds the only write end), then gives the plugin orphanGrace and
// kills its process group. A plugin's own watch for its host cannot help
// when the plugin is stopped (SIGSTOP): SIGKILL still ends it. Then, when
// the host listed ephemeral namespaces ($3) and gave a clean-up command
// ($5...), it runs the command once per namespace, with --driver <plugin>
// and the namespace appended: what a plugin that keeps its resources on host
// exit left of a namespace that was to die with its host goes too. Last, it
// removes the dead host's private socket directory ($3's directory). It
// ignores the terminal's SIGINT and SIGHUP, which are the host's to handle.
const reaperScript = `trap '' HUP INT; read _; sleep "$1"; kill -9 "-$2" 2>/dev/null
list=$3; name=$4; shift 4
if [ -s "$list" ] && [ $# -gt 0 ]; then
	while IFS= read -r ns; do "$@" --driver "$name" "$ns" </dev/null >/dev/null 2>&1; done < "$list"
fi
rm -rf "${list%/*}"; exit 0`

// reaper is a tiny process beside a plugin that kills the plugin's group
// once the host is gone. The host disarms it when it stops the plugin
// itself, or detaches from it on purpose.
type reaper struct {
	cmd  *exec.Cmd
	pipe *os.File // the write end; the host's death closes it
}

// startReaper starts a reaper for the process group pgid. list names the
// file of ephemeral namespaces, cleanup the command that cleans one (both
// may be empty).
func startReaper(pgid int, list, plugin string, cleanup []string) (*reaper, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("reaper pipe: %w", err)
	}
	defer r.Close()
	args := append([]string{"-c", reaperScript, "reaper",
		strconv.Itoa(int(orphanGrace / time.Second)), strconv.Itoa(pgid), list, plugin}, cleanup...)
	cmd := exec.Command("/bin/sh", args...)
	cmd.Stdin = r
	// The clean-up command needs the host's environment (DOCKER_HOST, the
	// plugin path, ...).
	cmd.Env = os.Environ()
	// Its own group: neither the terminal's Ctrl-C nor a kill of the
	// plugin's group reaches it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		w.Close()
		return nil, fmt.Errorf("start reaper: %w", err)
	}
	return &reaper{cmd: cmd, pipe: w}, nil
}

// disarm stops the reaper without letting it kill anything.
func (r *reaper) disarm() {
	if r == nil {
		return
	}
	_ = r.cmd.Process.Kill()
	_ = r.cmd.Wait()
	r.pipe.Close()
}

// killReattached kills a plugin process this host did not start (it
// reattached to it), with its process group when it leads one.
func killReattached(pid int) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err == nil {
		// pid (comm) state ppid pgrp ...: comm may hold spaces, so count
		// from the last ')'.
		s := string(stat)
		if i := strings.LastIndexByte(s, ')'); i >= 0 {
			var state string
			var ppid, pgrp int
			if _, err := fmt.Sscan(s[i+1:], &state, &ppid, &pgrp); err == nil && pgrp == pid {
				_ = syscall.Kill(-pid, syscall.SIGKILL)
				return
			}
		}
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
}

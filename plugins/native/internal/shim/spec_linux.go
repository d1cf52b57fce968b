//go:build linux

package shim

import (
	"os"
	"syscall"
)

// Spec is what the shim does for one task.
type Spec struct {
	// Path is the executable; empty when the driver did not find the
	// command, which the shim then reports as the task's own failure (exit
	// 127 and "<command>: command not found" on its stderr).
	Path string
	// Args is the command's argv; Args[0] is the command as the task gave it.
	Args []string
	// Env is the command's environment.
	Env []string
	// Dir is the command's working directory. The shim enters it for the
	// command after the binds, so a directory inside a bound volume is the
	// volume's.
	Dir string
	// UID and GID are the command's user and group; -1 keeps the shim's.
	UID, GID int
	// Binds are bind mounts the shim makes, in order, in its own mount
	// namespace before it starts the command. The driver starts a shim
	// with binds in a new mount namespace (and user namespace when it is
	// not root), so nothing of them is seen outside the task.
	Binds []Bind
}

// Bind mounts Source on Target.
type Bind struct{ Source, Target string }

// Args is the shim's argv and environment for s. The argv is Arg0, "drop"
// (an environment entry the driver added for the shim alone, or "-"), Dir,
// "uid:gid" or "-", the number of binds, each bind's source and target,
// Path, then the command's argv.
func Args(s Spec) (argv, shimEnv []string) {
	drop := "-"
	env := s.Env
	hasRace := false
	for _, kv := range env {
		hasRace = hasRace || len(kv) >= 7 && kv[:7] == "GORACE="
	}
	if raceEnabled && !hasRace {
		drop = raceEnv
		env = append(env[:len(env):len(env)], raceEnv)
	}
	cred := "-"
	if s.UID >= 0 {
		cred = itoa(s.UID) + ":" + itoa(s.GID)
	}
	argv = []string{Arg0, drop, s.Dir, cred, itoa(len(s.Binds))}
	for _, b := range s.Binds {
		argv = append(argv, b.Source, b.Target)
	}
	argv = append(argv, s.Path)
	return append(argv, s.Args...), env
}

// parseArgs reads what Args wrote (without Arg0): the entry to drop and the
// spec, whose Env is left empty. ok is false for a malformed argv.
func parseArgs(args []string) (drop string, s Spec, ok bool) {
	if len(args) < 6 {
		return "", s, false
	}
	drop, s.Dir = args[0], args[1]
	s.UID, s.GID = -1, -1
	if args[2] != "-" {
		uid, gid, found := cut(args[2], ':')
		if s.UID, ok = atoi(uid); !ok || !found {
			return "", s, false
		}
		if s.GID, ok = atoi(gid); !ok {
			return "", s, false
		}
	}
	n, ok := atoi(args[3])
	rest := args[4:]
	if !ok || len(rest) < 2*n+2 {
		return "", s, false
	}
	for i := 0; i < n; i++ {
		s.Binds = append(s.Binds, Bind{Source: rest[2*i], Target: rest[2*i+1]})
	}
	rest = rest[2*n:]
	s.Path, s.Args = rest[0], rest[1:]
	return drop, s, true
}

// bindAll makes s's binds private to this process's mount namespace.
func bindAll(binds []Bind) string {
	if len(binds) == 0 {
		return ""
	}
	// Nothing mounted here may reach the driver's namespace.
	if err := syscall.Mount("", "/", "", syscall.MS_REC|syscall.MS_PRIVATE, ""); err != nil {
		return "shim: make mounts private: " + err.Error()
	}
	for _, b := range binds {
		if err := syscall.Mount(b.Source, b.Target, "", syscall.MS_BIND|syscall.MS_REC, ""); err != nil {
			return "shim: bind " + b.Source + " on " + b.Target + ": " + err.Error()
		}
	}
	// A driver that is not root gave the shim CAP_SYS_ADMIN (in the task's
	// user namespace) as an ambient capability, which the command would
	// inherit: drop it. (EINVAL before Linux 4.3: there were none.)
	_, _, _ = syscall.RawSyscall(syscall.SYS_PRCTL, prCapAmbient, prCapAmbientClearAll, 0)
	return ""
}

// PR_CAP_AMBIENT and PR_CAP_AMBIENT_CLEAR_ALL from <linux/prctl.h>.
const (
	prCapAmbient         = 47
	prCapAmbientClearAll = 4
)

// procAttr is how the command starts: in s.Dir, with s.Env, as s's user.
func procAttr(s Spec, files []*os.File) *os.ProcAttr {
	attr := &os.ProcAttr{Dir: s.Dir, Env: s.Env, Files: files}
	if s.UID >= 0 {
		attr.Sys = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(s.UID), Gid: uint32(s.GID)}}
	}
	return attr
}

// startFailed tells why the command did not start. A command that is not
// there, or cannot be executed, is the task's failure, as in a shell: a
// line on its stderr and exit 127 (not found) or 126. A working directory
// that cannot be entered is the driver's (failure is set).
func startFailed(s Spec, err error) (code int, failure string) {
	if s.Path == "" {
		_, _ = os.Stderr.WriteString(s.Args[0] + ": command not found\n")
		return 127, ""
	}
	if pe, ok := err.(*os.PathError); ok && pe.Op == "chdir" {
		return 126, "shim: enter working directory " + s.Dir + ": " + pe.Err.Error()
	}
	_, _ = os.Stderr.WriteString(s.Args[0] + ": " + errText(err) + "\n")
	if pe, ok := err.(*os.PathError); ok && pe.Err == syscall.ENOENT {
		return 127, ""
	}
	return 126, ""
}

// errText is the reason in err without the operation and path of a
// PathError.
func errText(err error) string {
	if pe, ok := err.(*os.PathError); ok {
		return pe.Err.Error()
	}
	return err.Error()
}

// cut splits s at the first sep.
func cut(s string, sep byte) (before, after string, found bool) {
	for i := 0; i < len(s); i++ {
		if s[i] == sep {
			return s[:i], s[i+1:], true
		}
	}
	return s, "", false
}

// atoi parses a non-negative decimal number.
func atoi(s string) (int, bool) {
	if s == "" || len(s) > 10 {
		return 0, false
	}
	n := 0
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
		n = n*10 + int(s[i]-'0')
	}
	return n, true
}

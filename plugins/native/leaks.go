//go:build linux

package native

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/jtarchie/pocketci/orchestra"
)

// Leaks reports what of namespace is still on this host, independently of any
// driver instance: the directory <root>/<namespace> when it exists, and every
// live process whose working directory is under it. Empty means nothing
// leaked. It fits conformance.Options.Leaks.
func Leaks(namespace string) ([]string, error) {
	if err := orchestra.ValidateNamespace(namespace); err != nil {
		return nil, fmt.Errorf("native: leak probe: %w", err)
	}
	dir := namespaceDir(Root(), namespace)
	var left []string
	if _, err := os.Lstat(dir); err == nil {
		left = append(left, "directory "+dir)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("native: leak probe: stat %q: %w", dir, err)
	}
	procs, err := processesUnder(dir)
	if err != nil {
		return nil, err
	}
	return append(left, procs...), nil
}

// processesUnder lists live processes whose cwd is dir or below it. A
// deleted working directory reads as "<path> (deleted)" and still counts.
func processesUnder(dir string) ([]string, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("native: leak probe: read /proc: %w", err)
	}
	self := os.Getpid()
	var out []string
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		cwd, err := os.Readlink(filepath.Join("/proc", e.Name(), "cwd"))
		if err != nil {
			continue // gone, or a kernel thread
		}
		cwd = strings.TrimSuffix(cwd, " (deleted)")
		if cwd != dir && !strings.HasPrefix(cwd, dir+"/") {
			continue
		}
		comm, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "comm"))
		stat, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if isZombie(stat) {
			continue
		}
		out = append(out, fmt.Sprintf("process %d (%s) in %s", pid, strings.TrimSpace(string(comm)), cwd))
	}
	return out, nil
}

// isZombie reports whether a /proc/PID/stat line says state Z.
func isZombie(stat []byte) bool {
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && i+2 < len(s) && s[i+2] == 'Z'
}

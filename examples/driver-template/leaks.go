package mydriver

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Leaks reports what of namespace is still on this host, asking the system
// rather than a driver instance: the directory <root>/<namespace> (under
// the default root, Root(), that of a Config with Root empty) if it exists, and every live process whose working directory is under it. Empty
// means nothing leaked. It fits conformance.Options.Leaks.
func Leaks(namespace string) ([]string, error) {
	dir := namespaceDir(Root(), namespace)
	var left []string
	if _, err := os.Lstat(dir); err == nil {
		left = append(left, "directory "+dir)
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%s: leak probe: %w", Name, err)
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("%s: leak probe: %w", Name, err)
	}
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
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
		stat, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if i := strings.LastIndexByte(string(stat), ')'); i >= 0 && strings.HasPrefix(string(stat[i+1:]), " Z") {
			continue // a zombie is dead, only not yet reaped
		}
		left = append(left, fmt.Sprintf("process %s in %s", e.Name(), cwd))
	}
	return left, nil
}

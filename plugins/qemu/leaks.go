package qemu

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
)

// Leaks reports what of namespace is still there: live qemu processes whose
// command line carries the namespace's -name tag, private directories
// marked with it, and the namespace's directory under the default state
// directory (Config{} and the environment). Empty means nothing leaked.
func Leaks(namespace string) ([]string, error) {
	var found []string
	if dir := namespaceDir(Config{}.stateRoot(), namespace); exists(dir) {
		found = append(found, "namespace directory "+dir)
	}
	procs, err := filepath.Glob("/proc/[0-9]*/cmdline")
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	tag := []byte(qemuName(namespace))
	for _, p := range procs {
		data, err := os.ReadFile(p)
		if err != nil || len(data) == 0 {
			continue // the process ended meanwhile
		}
		args := bytes.Split(bytes.TrimRight(data, "\x00"), []byte{0})
		if !bytes.Contains(args[0], []byte("qemu-system")) {
			continue
		}
		for i, a := range args[:len(args)-1] {
			if string(a) == "-name" && bytes.Equal(args[i+1], tag) {
				found = append(found, "qemu process "+filepath.Base(filepath.Dir(p)))
				break
			}
		}
	}
	for _, base := range uniq(os.TempDir(), "/tmp") {
		dirs, err := filepath.Glob(filepath.Join(base, dirPrefix+"*"))
		if err != nil {
			return nil, fmt.Errorf("list private directories: %w", err)
		}
		for _, dir := range dirs {
			owner, err := os.ReadFile(filepath.Join(dir, markerFile))
			if err == nil && string(owner) == namespace {
				found = append(found, "directory "+dir)
			}
		}
	}
	return found, nil
}

func uniq(a, b string) []string {
	if filepath.Clean(a) == filepath.Clean(b) {
		return []string{a}
	}
	return []string{a, b}
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

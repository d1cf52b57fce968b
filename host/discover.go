package host

import (
	"bufio"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

const (
	// Prefix starts the file name of every plugin binary: pocketci-driver-<name>.
	Prefix = "pocketci-driver-"
	// PathEnv lists extra plugin directories, separated by colons.
	PathEnv = "ORCHESTRA_PLUGIN_PATH"
	// SumsFile, when present in a plugin directory, pins every plugin binary in
	// it: a binary that is not listed, or whose SHA-256 differs, is refused.
	SumsFile = "SHA256SUMS"
)

var validName = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]*$`)

// Dirs returns the plugin directories in precedence order: flagDirs (from
// --plugin-dir), then ORCHESTRA_PLUGIN_PATH, then the directory of the
// running executable, then ~/.local/share/pocketci/plugins. Duplicates are
// dropped.
func Dirs(flagDirs []string) []string {
	dirs := append([]string(nil), flagDirs...)
	if env := os.Getenv(PathEnv); env != "" {
		dirs = append(dirs, filepath.SplitList(env)...)
	}
	if exe, err := os.Executable(); err == nil {
		if resolved, err := filepath.EvalSymlinks(exe); err == nil {
			exe = resolved
		}
		dirs = append(dirs, filepath.Dir(exe))
	}
	if home, err := os.UserHomeDir(); err == nil {
		dirs = append(dirs, filepath.Join(home, ".local", "share", "pocketci", "plugins"))
	}
	seen := map[string]bool{}
	out := dirs[:0]
	for _, d := range dirs {
		if d == "" {
			continue
		}
		if abs, err := filepath.Abs(d); err == nil {
			d = abs
		}
		if !seen[d] {
			seen[d] = true
			out = append(out, d)
		}
	}
	return out
}

// candidate is a plugin binary found in a directory.
type candidate struct {
	name, path string
	// sum is the SHA-256 the directory's SHA256SUMS pins, if it has one.
	sum string
	// refused says why the binary may not run, if it may not.
	refused error
}

// discover lists the plugin binaries in dirs. The first directory that has a
// name wins; later ones are logged as shadowed.
func discover(dirs []string, logger *slog.Logger) []candidate {
	var found []candidate
	seen := map[string]string{}
	for _, dir := range dirs {
		for _, c := range scanDir(dir, logger) {
			if first, ok := seen[c.name]; ok {
				logger.Info("plugin shadowed by an earlier directory", "plugin", c.name, "path", c.path, "used", first)
				continue
			}
			seen[c.name] = c.path
			found = append(found, c)
		}
	}
	return found
}

func scanDir(dir string, logger *slog.Logger) []candidate {
	entries, err := os.ReadDir(dir)
	if err != nil {
		if !os.IsNotExist(err) {
			logger.Warn("cannot read plugin directory", "dir", dir, "err", err)
		}
		return nil
	}
	if abs, err := filepath.Abs(dir); err == nil {
		dir = abs
	}
	var dirErr error
	if resolved, err := filepath.EvalSymlinks(dir); err != nil {
		dirErr = fmt.Errorf("plugin directory %s: %w", dir, err)
	} else if err := checkDirs(resolved); err != nil {
		dirErr = fmt.Errorf("%w: refusing its plugins", err)
	}
	sums, sumsErr := readSums(filepath.Join(dir, SumsFile))
	var out []candidate
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), Prefix) {
			continue
		}
		c := candidate{name: strings.TrimPrefix(e.Name(), Prefix), path: filepath.Join(dir, e.Name())}
		if !validName.MatchString(c.name) {
			logger.Warn("skipping plugin with an invalid name", "path", c.path, "want", "pocketci-driver-[a-z0-9][a-z0-9_-]*")
			continue
		}
		info, err := os.Stat(c.path)
		if err != nil {
			logger.Warn("skipping plugin", "path", c.path, "err", err)
			continue
		}
		if !info.Mode().IsRegular() || info.Mode().Perm()&0o111 == 0 {
			logger.Warn("skipping plugin that is not an executable file", "path", c.path, "mode", info.Mode().String())
			continue
		}
		switch {
		case dirErr != nil:
			c.refused = dirErr
		case trustErr(c.path) != nil:
			c.refused = trustErr(c.path)
		case sumsErr != nil:
			c.refused = sumsErr
		case sums != nil:
			sum, ok := sums[e.Name()]
			if !ok {
				c.refused = fmt.Errorf("plugin %s is not listed in %s: refusing to run it", c.path, filepath.Join(dir, SumsFile))
			}
			c.sum = sum
		}
		out = append(out, c)
	}
	return out
}

// trustErr says why the plugin file at path, or a directory on its
// resolved path, may not be trusted; nil when it may.
func trustErr(path string) error {
	resolved, err := resolve(path)
	if err != nil {
		return err
	}
	info, err := os.Stat(resolved)
	if err != nil {
		return fmt.Errorf("plugin %s: %w", path, err)
	}
	return checkOwner("plugin", resolved, info)
}

// readSums parses a sha256sum-style file: "<hex>  <file name>" per line,
// the name optionally starting with "*" (binary mode) or "./". A name listed
// twice with different digests is refused. It returns nil, nil when the
// file does not exist. The file must be as trustworthy as a plugin.
func readSums(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if err := checkOwner(SumsFile, path, info); err != nil {
		return nil, err
	}
	sums := map[string]string{}
	lineOf := map[string]int{}
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Fields(line)
		if len(fields) != 2 || len(fields[0]) != 64 {
			return nil, fmt.Errorf("%s line %d: want \"<sha256 hex>  <file name>\", got %q", path, n, line)
		}
		if _, err := hex.DecodeString(fields[0]); err != nil {
			return nil, fmt.Errorf("%s line %d: bad hex digest: %w", path, n, err)
		}
		name := strings.TrimPrefix(strings.TrimPrefix(fields[1], "*"), "./")
		sum := strings.ToLower(fields[0])
		if old, ok := sums[name]; ok && old != sum {
			return nil, fmt.Errorf("%s lines %d and %d pin %s to different digests: refusing the file", path, lineOf[name], n, name)
		}
		if strings.Contains(name, "/") {
			return nil, fmt.Errorf("%s line %d: %q is not a file name in this directory", path, n, fields[1])
		}
		sums[name], lineOf[name] = sum, n
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return sums, nil
}

// fileSHA256 is the hex SHA-256 of the file at path.
func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	sum, err := readerSHA256(f)
	if err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	return sum, nil
}

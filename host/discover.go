package host

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
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
	var dirErr error
	if info, err := os.Stat(dir); err == nil && info.Mode().Perm()&0o022 != 0 {
		dirErr = fmt.Errorf("plugin directory %s is writable by group or others (mode %s): refusing its plugins", dir, info.Mode().Perm())
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
		case info.Mode().Perm()&0o022 != 0:
			c.refused = fmt.Errorf("plugin %s is writable by group or others (mode %s): refusing to run it", c.path, info.Mode().Perm())
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

// readSums parses a sha256sum-style file: "<hex>  <file name>" per line. It
// returns nil, nil when the file does not exist.
func readSums(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	defer f.Close()
	sums := map[string]string{}
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
		sums[strings.TrimPrefix(fields[1], "*")] = strings.ToLower(fields[0])
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
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("hash %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

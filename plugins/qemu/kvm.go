package qemu

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// The driver remembers, per host, that KVM cannot boot the guest: some
// sandboxes expose a /dev/kvm that opens but cannot run a VM, and trying it
// costs a failed qemu start in every new plugin process. The memo is a small
// file in the cache directory whose name carries the host kernel release and
// the qemu version, so a kernel or qemu upgrade tries KVM again.

// kvmMemoDir is where the memo files live (beside the guest image's default
// directory, so it survives a custom POCKETCI_QEMU_IMAGE_DIR).
func kvmMemoDir() string { return filepath.Join(filepath.Dir(DefaultImageDir()), "qemu-kvm") }

// kvmKey identifies the host kernel and the qemu binary's version.
func kvmKey(ctx context.Context, binary string) (string, error) {
	release, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		return "", fmt.Errorf("read kernel release: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, binary, "--version").Output()
	if err != nil {
		return "", fmt.Errorf("%s --version: %w", binary, err)
	}
	first, _, _ := bytes.Cut(out, []byte("\n"))
	sum := sha256.Sum256([]byte(strings.TrimSpace(string(release)) + "\x00" + strings.TrimSpace(string(first))))
	return hex.EncodeToString(sum[:8]), nil
}

// kvmMemoPath is the memo file for key.
func kvmMemoPath(key string) string { return filepath.Join(kvmMemoDir(), "broken-"+key) }

// kvmKnownBroken reports whether this host's memo says KVM fails.
func kvmKnownBroken(key string) bool {
	_, err := os.Stat(kvmMemoPath(key))
	return err == nil
}

// rememberKVMBroken writes the memo; reason (the failed boot's error) goes
// into the file for whoever wonders why KVM is not used.
func rememberKVMBroken(key, reason string, logger *slog.Logger) {
	if err := os.MkdirAll(kvmMemoDir(), 0o755); err != nil {
		logger.Debug("qemu: cannot remember that KVM fails", "err", err)
		return
	}
	tmp, err := os.CreateTemp(kvmMemoDir(), ".broken-*")
	if err != nil {
		logger.Debug("qemu: cannot remember that KVM fails", "err", err)
		return
	}
	_, werr := tmp.WriteString(reason + "\n")
	cerr := tmp.Close()
	if err := errors.Join(werr, cerr); err != nil {
		_ = os.Remove(tmp.Name())
		logger.Debug("qemu: cannot remember that KVM fails", "err", err)
		return
	}
	if err := os.Rename(tmp.Name(), kvmMemoPath(key)); err != nil {
		_ = os.Remove(tmp.Name())
		logger.Debug("qemu: cannot remember that KVM fails", "err", err)
	}
}

// kvmKeys caches kvmKey per qemu binary for the life of the process (the
// version of an installed binary does not change under a running plugin
// often enough to matter; a new process computes it again).
var kvmKeys sync.Map

func kvmKeyCached(ctx context.Context, binary string) (string, error) {
	if k, ok := kvmKeys.Load(binary); ok {
		return k.(string), nil
	}
	k, err := kvmKey(ctx, binary)
	if err != nil {
		return "", err
	}
	kvmKeys.Store(binary, k)
	return k, nil
}

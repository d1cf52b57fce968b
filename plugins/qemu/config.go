package qemu

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Settings come from the environment of the process running the driver and
// are read again at every boot, so a fixed setting takes effect on the next
// call without a new driver.
const (
	// EnvImageDir names the directory holding vmlinux and initramfs.cpio.gz.
	EnvImageDir = "POCKETCI_QEMU_IMAGE_DIR"
	// EnvKernel overrides the kernel file (an ELF vmlinux with a PVH note, or a bzImage).
	EnvKernel = "POCKETCI_QEMU_KERNEL"
	// EnvInitrd overrides the initramfs file.
	EnvInitrd = "POCKETCI_QEMU_INITRD"
	// EnvGuestd overrides the guest task daemon (pocketci-guestd).
	EnvGuestd = "POCKETCI_QEMU_GUESTD"
	// EnvBinary overrides the qemu-system-x86_64 executable.
	EnvBinary = "POCKETCI_QEMU_BINARY"
	// EnvAccel forces the accelerator: "kvm", "tcg" or "auto" (the default).
	EnvAccel = "POCKETCI_QEMU_ACCEL"
	// EnvMemory is the guest's memory in MiB (default 256).
	EnvMemory = "POCKETCI_QEMU_MEMORY"
	// EnvCPUs is the guest's vCPU count (default 1).
	EnvCPUs = "POCKETCI_QEMU_CPUS"
	// EnvBootTimeout bounds a boot, as a Go duration (default 2m).
	EnvBootTimeout = "POCKETCI_QEMU_BOOT_TIMEOUT"
)

// config is what one boot uses.
type config struct {
	binary      string
	kernel      string
	initrd      string
	guestd      string // pocketci-guestd, copied into the guest at boot
	accel       string // "kvm", "tcg" or "auto"
	memoryMiB   int
	cpus        int
	bootTimeout time.Duration
	snapshot    bool // restore boots from (and save) a boot snapshot
}

// DefaultImageDir is where guest/build.sh writes the guest image and where
// the driver looks for it: ${XDG_CACHE_HOME:-$HOME/.cache}/pocketci/qemu.
func DefaultImageDir() string {
	base := os.Getenv("XDG_CACHE_HOME")
	if base == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			home = os.TempDir()
		}
		base = filepath.Join(home, ".cache")
	}
	return filepath.Join(base, "pocketci", "qemu")
}

// ImagePaths returns the kernel and initramfs the driver boots, following
// POCKETCI_QEMU_KERNEL, POCKETCI_QEMU_INITRD, POCKETCI_QEMU_IMAGE_DIR and then
// DefaultImageDir. The files may not exist.
func ImagePaths() (kernel, initrd string) {
	dir := imageDir()
	kernel, initrd = os.Getenv(EnvKernel), os.Getenv(EnvInitrd)
	if kernel == "" {
		kernel = filepath.Join(dir, "vmlinux")
	}
	if initrd == "" {
		initrd = filepath.Join(dir, "initramfs.cpio.gz")
	}
	return kernel, initrd
}

// imageDir is POCKETCI_QEMU_IMAGE_DIR, else DefaultImageDir.
func imageDir() string {
	if dir := os.Getenv(EnvImageDir); dir != "" {
		return dir
	}
	return DefaultImageDir()
}

// GuestdPath is the guest's task daemon the driver copies into every guest
// it boots: POCKETCI_QEMU_GUESTD, else pocketci-guestd in the image
// directory, built by guest/build.sh with the kernel and initramfs. It may
// not exist.
func GuestdPath() string {
	if p := os.Getenv(EnvGuestd); p != "" {
		return p
	}
	return filepath.Join(imageDir(), "pocketci-guestd")
}

// loadConfig reads the settings and checks that the files exist.
func loadConfig() (config, error) {
	c := config{binary: "qemu-system-x86_64", accel: "auto", memoryMiB: 256, cpus: 1, bootTimeout: 2 * time.Minute, snapshot: true}
	switch v := os.Getenv(EnvSnapshot); v {
	case "", "on":
	case "off":
		c.snapshot = false
	default:
		return c, fmt.Errorf("%s=%q: want on or off", EnvSnapshot, v)
	}
	c.kernel, c.initrd = ImagePaths()
	c.guestd = GuestdPath()
	if v := os.Getenv(EnvBinary); v != "" {
		c.binary = v
	}
	if v := os.Getenv(EnvAccel); v != "" {
		switch v {
		case "kvm", "tcg", "auto":
			c.accel = v
		default:
			return c, fmt.Errorf("%s=%q: want kvm, tcg or auto", EnvAccel, v)
		}
	}
	for _, s := range []struct {
		name string
		dst  *int
	}{{EnvMemory, &c.memoryMiB}, {EnvCPUs, &c.cpus}} {
		if v := os.Getenv(s.name); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 {
				return c, fmt.Errorf("%s=%q: want a positive integer", s.name, v)
			}
			*s.dst = n
		}
	}
	if v := os.Getenv(EnvBootTimeout); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return c, fmt.Errorf("%s=%q: want a positive duration such as 90s", EnvBootTimeout, v)
		}
		c.bootTimeout = d
	}
	for _, f := range []struct{ what, path string }{{"kernel", c.kernel}, {"initramfs", c.initrd}, {"task daemon", c.guestd}} {
		if _, err := os.Stat(f.path); err != nil {
			return c, fmt.Errorf("guest %s %s: %w (build the guest image with plugins/qemu/guest/build.sh, or set %s/%s/%s/%s)",
				f.what, f.path, err, EnvImageDir, EnvKernel, EnvInitrd, EnvGuestd)
		}
	}
	return c, nil
}

// hostTSCkHz is the host's "cpu MHz" in kHz. Under TCG the guest TSC runs at
// the host rate; microvm has no HPET or PM timer, so the kernel must be told
// (tsc_early_khz) or it may hang calibrating against the PIT.
func hostTSCkHz() (int, error) {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return 0, fmt.Errorf("read host cpu frequency: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), ":")
		if !ok || strings.TrimSpace(name) != "cpu MHz" {
			continue
		}
		mhz, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if err != nil || mhz <= 0 {
			return 0, fmt.Errorf("parse cpu MHz %q: %w", value, err)
		}
		return int(mhz * 1000), nil
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("read /proc/cpuinfo: %w", err)
	}
	return 0, errors.New("no \"cpu MHz\" line in /proc/cpuinfo")
}

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

	"github.com/jtarchie/pocketci/orchestra"
)

// Environment variables: the defaults of the Config fields left empty. They
// are read again at every boot, so a fixed setting takes effect on the next
// boot without a new driver.
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
	// EnvStateDir is the directory under which every namespace keeps its
	// tasks' files and its volumes (default <os.TempDir()>/pocketci-qemu).
	EnvStateDir = "POCKETCI_QEMU_STATE_DIR"
)

// Config is the qemu driver's configuration, per driver instance. Every
// field left empty (zero) takes its environment variable, read at each
// boot, and then the built-in default.
type Config struct {
	// ImageDir holds vmlinux, initramfs.cpio.gz and pocketci-guestd
	// (POCKETCI_QEMU_IMAGE_DIR; DefaultImageDir).
	ImageDir string `json:"image_dir,omitempty"`
	// Kernel, Initrd and Guestd override single files of ImageDir
	// (POCKETCI_QEMU_KERNEL, _INITRD, _GUESTD).
	Kernel string `json:"kernel,omitempty"`
	Initrd string `json:"initrd,omitempty"`
	Guestd string `json:"guestd,omitempty"`
	// Binary is the qemu executable (POCKETCI_QEMU_BINARY; qemu-system-x86_64).
	Binary string `json:"binary,omitempty"`
	// Accel is "auto", "kvm" or "tcg" (POCKETCI_QEMU_ACCEL; auto).
	Accel string `json:"accel,omitempty"`
	// MemoryMiB is the guest's memory (POCKETCI_QEMU_MEMORY; 256).
	MemoryMiB int `json:"memory_mib,omitempty"`
	// CPUs is the guest's vCPU count (POCKETCI_QEMU_CPUS; 1).
	CPUs int `json:"cpus,omitempty"`
	// BootTimeout bounds a boot (POCKETCI_QEMU_BOOT_TIMEOUT; 2m).
	BootTimeout orchestra.Duration `json:"boot_timeout,omitempty"`
	// Snapshot is "on" or "off": restore boots from the host's boot
	// snapshot (POCKETCI_QEMU_SNAPSHOT; on).
	Snapshot string `json:"snapshot,omitempty"`
	// ImageCache is the directory of unpacked task images
	// (POCKETCI_QEMU_IMAGE_CACHE; qemu-rootfs beside DefaultImageDir).
	ImageCache string `json:"image_cache,omitempty"`
	// StateDir holds a directory per namespace with its tasks' files and
	// its volumes (POCKETCI_QEMU_STATE_DIR; <os.TempDir()>/pocketci-qemu).
	StateDir string `json:"state_dir,omitempty"`
}

// DriverName is "qemu".
func (Config) DriverName() string { return driverName }

// Validate checks the fields that have a fixed form. Its errors name the
// field, never its value.
func (c Config) Validate() error {
	switch c.Accel {
	case "", "auto", "kvm", "tcg":
	default:
		return errors.New("accel: want auto, kvm or tcg")
	}
	switch c.Snapshot {
	case "", "on", "off":
	default:
		return errors.New("snapshot: want on or off")
	}
	switch {
	case c.MemoryMiB < 0:
		return errors.New("memory_mib: want a positive number of MiB")
	case c.CPUs < 0:
		return errors.New("cpus: want a positive number")
	case c.BootTimeout < 0:
		return errors.New("boot_timeout: want a positive duration")
	}
	for _, f := range []struct{ name, value string }{
		{"image_dir", c.ImageDir}, {"kernel", c.Kernel}, {"initrd", c.Initrd}, {"guestd", c.Guestd},
		{"binary", c.Binary}, {"image_cache", c.ImageCache}, {"state_dir", c.StateDir},
	} {
		if strings.ContainsRune(f.value, 0) {
			return fmt.Errorf("%s: contains a NUL byte", f.name)
		}
	}
	return nil
}

// orEnv is v, else the environment variable name.
func orEnv(v, name string) string {
	if v != "" {
		return v
	}
	return os.Getenv(name)
}

// stateRoot is the directory holding every namespace's directory.
func (c Config) stateRoot() string {
	if dir := orEnv(c.StateDir, EnvStateDir); dir != "" {
		return dir
	}
	return filepath.Join(os.TempDir(), "pocketci-qemu")
}

// imageCache is the directory of unpacked task images.
func (c Config) imageCache() string {
	if dir := orEnv(c.ImageCache, EnvImageCache); dir != "" {
		return dir
	}
	return filepath.Join(filepath.Dir(DefaultImageDir()), "qemu-rootfs")
}

// config is what one boot uses: Config resolved against the environment.
type config struct {
	binary      string
	kernel      string
	initrd      string
	guestd      string // pocketci-guestd, copied into the guest at boot
	accel       string // "kvm", "tcg" or "auto"
	memoryMiB   int
	cpus        int
	bootTimeout time.Duration
	snapshot    bool   // restore boots from (and save) a boot snapshot
	images      string // the unpacked task images, shared read-only
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

// ImagePaths returns the kernel and initramfs the driver boots with the
// default Config: POCKETCI_QEMU_KERNEL, POCKETCI_QEMU_INITRD,
// POCKETCI_QEMU_IMAGE_DIR and then DefaultImageDir. The files may not exist.
func ImagePaths() (kernel, initrd string) { return Config{}.imagePaths() }

func (c Config) imagePaths() (kernel, initrd string) {
	dir := c.imageDir()
	kernel, initrd = orEnv(c.Kernel, EnvKernel), orEnv(c.Initrd, EnvInitrd)
	if kernel == "" {
		kernel = filepath.Join(dir, "vmlinux")
	}
	if initrd == "" {
		initrd = filepath.Join(dir, "initramfs.cpio.gz")
	}
	return kernel, initrd
}

// imageDir is ImageDir, else POCKETCI_QEMU_IMAGE_DIR, else DefaultImageDir.
func (c Config) imageDir() string {
	if dir := orEnv(c.ImageDir, EnvImageDir); dir != "" {
		return dir
	}
	return DefaultImageDir()
}

// GuestdPath is the guest's task daemon the driver copies into every guest
// it boots with the default Config: POCKETCI_QEMU_GUESTD, else
// pocketci-guestd in the image directory, built by guest/build.sh with the
// kernel and initramfs. It may not exist.
func GuestdPath() string { return Config{}.guestdPath() }

func (c Config) guestdPath() string {
	if p := orEnv(c.Guestd, EnvGuestd); p != "" {
		return p
	}
	return filepath.Join(c.imageDir(), "pocketci-guestd")
}

// resolve turns the Config and the environment into what one boot uses,
// and checks that the files exist. Errors name the setting, not its value.
func (c Config) resolve() (config, error) {
	r := config{binary: "qemu-system-x86_64", accel: "auto", memoryMiB: 256, cpus: 1, bootTimeout: 2 * time.Minute, snapshot: true,
		images: c.imageCache()}
	switch v := orEnv(c.Snapshot, EnvSnapshot); v {
	case "", "on":
	case "off":
		r.snapshot = false
	default:
		return r, fmt.Errorf("snapshot (%s): want on or off", EnvSnapshot)
	}
	r.kernel, r.initrd = c.imagePaths()
	r.guestd = c.guestdPath()
	if v := orEnv(c.Binary, EnvBinary); v != "" {
		r.binary = v
	}
	switch v := orEnv(c.Accel, EnvAccel); v {
	case "":
	case "kvm", "tcg", "auto":
		r.accel = v
	default:
		return r, fmt.Errorf("accel (%s): want kvm, tcg or auto", EnvAccel)
	}
	for _, s := range []struct {
		field, env string
		value      int
		dst        *int
	}{{"memory_mib", EnvMemory, c.MemoryMiB, &r.memoryMiB}, {"cpus", EnvCPUs, c.CPUs, &r.cpus}} {
		if s.value > 0 {
			*s.dst = s.value
		} else if v := os.Getenv(s.env); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 {
				return r, fmt.Errorf("%s (%s): want a positive integer", s.field, s.env)
			}
			*s.dst = n
		}
	}
	if c.BootTimeout > 0 {
		r.bootTimeout = c.BootTimeout.Std()
	} else if v := os.Getenv(EnvBootTimeout); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return r, fmt.Errorf("boot_timeout (%s): want a positive duration such as 90s", EnvBootTimeout)
		}
		r.bootTimeout = d
	}
	for _, f := range []struct{ what, path string }{{"kernel", r.kernel}, {"initramfs", r.initrd}, {"task daemon", r.guestd}} {
		if _, err := os.Stat(f.path); err != nil {
			return r, fmt.Errorf("guest %s %s: %w (build the guest image with plugins/qemu/guest/build.sh, or set image_dir/kernel/initrd/guestd or %s/%s/%s/%s)",
				f.what, f.path, err, EnvImageDir, EnvKernel, EnvInitrd, EnvGuestd)
		}
	}
	return r, nil
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

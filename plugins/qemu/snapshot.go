package qemu

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Boot snapshots. The first boot on a host (per guest image, qemu version,
// memory, CPUs and accelerator) saves the booted, set-up guest with QMP
// migrate to a file in the cache directory; later boots start qemu with
// -incoming from that file and resume in about a tenth of a cold boot.
// QEMU refuses to migrate while a 9p export is mounted, so the shares are
// unmounted around the save and mounted again after every restore. After
// a restore the guest's clock is set to the host's and the host mixes fresh
// bytes into the guest's input pool. The kernel's CRNG only takes them at
// its next reseed (seconds to a minute), so restored VMs may read the same
// /dev/urandom bytes until then: vmgenid, which would reseed at once, does
// not bind on microvm (no ACPI device for it).

// EnvSnapshot set to "off" makes every boot a cold boot.
const EnvSnapshot = "POCKETCI_QEMU_SNAPSHOT"

// snapshotFormat changes whenever what a snapshot holds changes.
const snapshotFormat = "4"

// unmountScript is run before a save.
const unmountScript = `umount /mnt/` + shareTag + ` /mnt/` + imagesTag

// remountScript is run after a save and after every restore. Arguments:
// the host's time (seconds), random bytes in hex.
const remountScript = `date -s @$1 >/dev/null
echo "$2" >/dev/urandom
have=
while read -r _ mp fs _; do [ "$fs" = 9p ] && have="$have $mp "; done </proc/mounts
for t in ` + shareTag + `:none ` + imagesTag + `:loose; do
	case $have in *" /mnt/${t%:*} "*) continue ;; esac
	` + mount9p + `,cache=${t#*:} ${t%:*} /mnt/${t%:*} || exit 1
done`

func snapshotDir() string { return filepath.Join(filepath.Dir(DefaultImageDir()), "qemu-snapshot") }

// snapshotPath names the snapshot for this boot's settings: everything that
// must match between save and restore goes into the key.
func snapshotPath(ctx context.Context, cfg config, accel, cpu, appendLine string) (string, error) {
	host, err := kvmKeyCached(ctx, cfg.binary) // kernel release and qemu version
	if err != nil {
		return "", err
	}
	h := sha256.New()
	for _, f := range []string{cfg.kernel, cfg.initrd, cfg.guestd} {
		fi, err := os.Stat(f)
		if err != nil {
			return "", fmt.Errorf("snapshot key: %w", err)
		}
		abs, _ := filepath.Abs(f)
		fmt.Fprintf(h, "%s %d %d\n", abs, fi.Size(), fi.ModTime().UnixNano())
	}
	fmt.Fprintf(h, "%s\n%s\n%s\n%s\n%d\n%d\n%s\n%s\n%s\n", snapshotFormat, host, accel, cpu, cfg.memoryMiB, cfg.cpus, appendLine, setupScript, remountScript)
	return filepath.Join(snapshotDir(), hex.EncodeToString(h.Sum(nil)[:12])+".state"), nil
}

// incomingArg is the -incoming value that restores path, or "" when path
// cannot be quoted for qemu's exec: (which runs /bin/sh -c).
func incomingArg(path string) string {
	if strings.ContainsAny(path, "'\n") {
		return ""
	}
	return "exec:cat '" + path + "'"
}

// resume waits for an incoming migration to finish and continues the VM.
func (v *vm) resume(ctx context.Context) error {
	q, err := dialQMP(ctx, v.qmpPath())
	if err != nil {
		return err
	}
	defer q.close()
	for {
		var st struct {
			Status string `json:"status"`
		}
		if err := q.exec(ctx, "query-status", nil, &st); err != nil {
			return err
		}
		switch st.Status {
		case "inmigrate":
			select {
			case <-ctx.Done():
				return fmt.Errorf("restore the snapshot: %w", ctx.Err())
			case <-time.After(2 * time.Millisecond):
			}
			continue
		case "running":
			return nil
		case "paused", "postmigrate", "prelaunch":
			return q.exec(ctx, "cont", nil, nil)
		default:
			return fmt.Errorf("restore the snapshot: the VM is %q", st.Status)
		}
	}
}

// remount mounts the shares again and fixes the clock and random pool.
func (v *vm) remount(ctx context.Context) error {
	seed := make([]byte, 32)
	_, _ = rand.Read(seed)
	return v.runOK(ctx, "mount the shares", remountScript, strconv.FormatInt(time.Now().Unix(), 10), hex.EncodeToString(seed))
}

// save writes the booted guest's state to path (through a temporary file
// renamed into place, so concurrent processes never see half a snapshot)
// and resumes the VM with its shares mounted again.
func (v *vm) save(ctx context.Context, path string, logger *slog.Logger) (err error) {
	start := time.Now()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("snapshot directory: %w", err)
	}
	suffix := make([]byte, 4)
	_, _ = rand.Read(suffix)
	tmp := fmt.Sprintf("%s.%d-%x.tmp", path, os.Getpid(), suffix)
	if incomingArg(tmp) == "" {
		return errors.New("snapshot path cannot be quoted for qemu")
	}
	if err := v.runOK(ctx, "unmount the shares", unmountScript); err != nil {
		return err
	}
	q, err := dialQMP(ctx, v.qmpPath())
	if err != nil {
		return errors.Join(err, v.remount(ctx))
	}
	defer q.close()
	defer func() {
		if cerr := q.exec(ctx, "cont", nil, nil); cerr != nil {
			err = errors.Join(err, cerr)
		}
		err = errors.Join(err, v.remount(ctx))
		if err != nil {
			_ = os.Remove(tmp)
		}
	}()
	if err := q.exec(ctx, "stop", nil, nil); err != nil {
		return err
	}
	if err := q.exec(ctx, "migrate", map[string]string{"uri": "exec:cat > '" + tmp + "'"}, nil); err != nil {
		return err
	}
	for {
		var st struct {
			Status string `json:"status"`
			Error  string `json:"error-desc"`
		}
		if err := q.exec(ctx, "query-migrate", nil, &st); err != nil {
			return err
		}
		if st.Status == "completed" {
			break
		}
		if st.Status == "failed" || st.Status == "cancelled" {
			return fmt.Errorf("save the snapshot: migration %s: %s", st.Status, st.Error)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("save the snapshot: %w", ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("save the snapshot: %w", err)
	}
	// One snapshot per host: older ones (another guest image, qemu or
	// setting) are removed, so the cache does not grow with upgrades.
	old, _ := filepath.Glob(filepath.Join(filepath.Dir(path), "*.state"))
	for _, f := range old {
		if f != path {
			_ = os.Remove(f)
		}
	}
	logger.Info("qemu: saved a boot snapshot; later boots restore it", "path", path, "took", time.Since(start).Round(time.Millisecond))
	return nil
}

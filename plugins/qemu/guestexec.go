package qemu

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jtarchie/pocketci/plugins/qemu/qga"
)

// mount9p starts the command that mounts a 9p share in the guest (the
// cache mode follows: none for the share both sides write, loose for the
// immutable images), as /init does at boot.
const mount9p = "mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000"

// setupScript runs once after every boot, before the first task. It gives
// the guest the /dev a POSIX shell expects (fd, stdin, stdout, stderr, pts,
// shm) and a writable /tmp, whatever the initramfs did, so a user's own
// initrd gets them too. Every step is idempotent.
const setupScript = `# pocketci guest setup (written by the qemu driver)
set -e
for l in fd:/proc/self/fd stdin:/proc/self/fd/0 stdout:/proc/self/fd/1 stderr:/proc/self/fd/2; do
	[ -e "/dev/${l%%:*}" ] || ln -sfn "${l#*:}" "/dev/${l%%:*}"
done
[ -e /dev/ptmx ] || ln -sfn pts/ptmx /dev/ptmx
mkdir -p /dev/pts /dev/shm /tmp
grep -q ' /dev/pts ' /proc/mounts || mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts
grep -q ' /dev/shm ' /proc/mounts || mount -t tmpfs -o mode=1777,nosuid,nodev shm /dev/shm
grep -q ' /tmp ' /proc/mounts || mount -t tmpfs -o mode=1777 tmpfs /tmp
chmod 1777 /tmp /dev/shm
# cgroup v2 for per-task limits: the root's children get memory, cpu, pids.
mkdir -p /sys/fs/cgroup
grep -q ' /sys/fs/cgroup cgroup2 ' /proc/mounts || mount -t cgroup2 cgroup2 /sys/fs/cgroup
echo '+memory +cpu +pids' >/sys/fs/cgroup/cgroup.subtree_control
mkdir -p /run/pocketci-root
# Images are immutable (a directory per image ID, renamed into place
# whole): the guest may cache them, so a task's programs are read over 9p
# once, not at every exec. The share stays uncached: both sides write it.
if ! grep -q ' /mnt/` + imagesTag + ` 9p .*cache=loose' /proc/mounts; then
	umount /mnt/` + imagesTag + ` 2>/dev/null || true
	mkdir -p /mnt/` + imagesTag + `
	` + mount9p + `,cache=loose ` + imagesTag + ` /mnt/` + imagesTag + `
fi
# The task daemon, from the share to the guest's own memory (a snapshot
# needs the share unmounted), restarted should it ever exit; it logs to
# the console.
if [ ! -e /run/pocketci-guestd ]; then
	cp ` + guestShare + `/.pocketci/guestd /run/pocketci-guestd
	chmod 0755 /run/pocketci-guestd
	setsid sh -c 'while :; do /run/pocketci-guestd; sleep 1; done' </dev/null >/dev/console 2>&1 &
fi
`

// run executes a shell script in the guest (as root, with the driver's own
// PATH), waits for it and returns its exit code and captured output. It is
// for the driver's own short steps, not for tasks.
func (v *vm) run(ctx context.Context, script string, args ...string) (code int, stdout, stderr string, err error) {
	pid, err := v.agent.Exec(ctx, qga.ExecRequest{
		Path:          "/bin/busybox",
		Args:          append([]string{"sh", "-c", script, "pocketci"}, args...),
		Env:           []string{"PATH=/sbin:/usr/sbin:/bin:/usr/bin"},
		CaptureOutput: true,
	})
	if err != nil {
		return 0, "", "", fmt.Errorf("guest-exec: %w", err)
	}
	for {
		st, err := v.agent.ExecStatus(ctx, pid)
		if err != nil {
			return 0, "", "", fmt.Errorf("guest-exec-status: %w", err)
		}
		if st.Exited {
			return st.Code(), string(st.OutData), string(st.ErrData), nil
		}
		select {
		case <-ctx.Done():
			return 0, "", "", fmt.Errorf("guest script: %w", ctx.Err())
		case <-time.After(pollFast):
		}
	}
}

// runOK is run that turns a non-zero exit into an error carrying stderr.
func (v *vm) runOK(ctx context.Context, what, script string, args ...string) error {
	code, out, errOut, err := v.run(ctx, script, args...)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if code != 0 {
		return fmt.Errorf("%s: exit %d: %s", what, code, strings.TrimSpace(errOut+" "+out))
	}
	return nil
}

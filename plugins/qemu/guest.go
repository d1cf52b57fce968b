package qemu

import (
	"fmt"
	"os"
	"path/filepath"
)

// The driver writes its guest-side helpers onto the share at every boot, so
// they always match the driver's version, whatever image the guest booted.
// The image only needs busybox at /bin/busybox, qemu-ga, and the share
// mounted at /mnt/share.

// runScript runs one task, as `sh -c runScript pocketci-run TASKDIR USER
// STDIN ROOT WORKDIR MOUNTS MEMORY CPUWEIGHT NAME=VALUE... PROG ARGS`.
// It is started by guest-exec through `busybox setsid`, so the task is its
// own session and process group (Cleanup kills the group). The shell's own
// variables never reach the task: `env -i` starts it with exactly the given
// variables. With an empty ROOT the task runs in the guest's own userland,
// in TASKDIR/work (where the host linked its mounts); otherwise imageScript
// runs it chrooted in ROOT (an unpacked image) in a mount namespace of its
// own, in WORKDIR, with MOUNTS ("SRC<tab>DST" lines) bound in. A non-zero
// MEMORY (bytes) or CPUWEIGHT puts the task in a cgroup of its own
// (/sys/fs/cgroup/task-<wrapper pid>) with memory.max and cpu.weight; the
// kernel's OOM killer SIGKILLs a task over its limit (exit 137).
// The task's stdout and stderr are pipes, as on every other
// platform (a task that opens /dev/stdout gets the pipe again, not a file
// it would truncate); a cat per stream copies them into the files on the
// share. When the task exits, what is left of its session (background
// children holding the pipes open) is killed, as a container's init would,
// and the wrapper exits with the task's status once the copies are done.
const runScript = `# pocketci task wrapper (written by the qemu driver)
d=$1 u=$2 in=$3 root=$4 wd=$5 mnts=$6 mem=$7 cpuw=$8
shift 8
if [ -n "$root" ]; then
	cd / || exit 126
	set -- /bin/busybox unshare -m --propagation private /bin/busybox sh ` + guestShare + `/.pocketci/image "$root" "$wd" "$mnts" "$u" "$@"
else
	cd "$d/work" || exit 126
	case $u in
	"" | root | 0 | 0:0) set -- /bin/busybox env -i "$@" ;;
	*)
		case $u in
		*[!0-9:]*) ;;
		*)
			# A numeric uid[:gid] gets a passwd entry so that su can use it.
			uid=${u%%:*} gid=${u#*:}
			[ "$gid" = "$u" ] && gid=$uid
			n=uid$uid-gid$gid
			grep -q "^$n:" /etc/passwd || echo "$n:x:$uid:$gid::/:/bin/sh" >>/etc/passwd
			u=$n
			;;
		esac
		set -- /bin/busybox su -p -s /bin/sh -c 'exec /bin/busybox env -i "$@"' "$u" -- pocketci "$@"
		;;
	esac
fi
p=/tmp/.pocketci-io.$$
rm -rf "$p"
mkdir -m 0700 "$p" && /bin/busybox mkfifo -m 0600 "$p/o" "$p/e" "$p/i" || exit 126
exec 6>"$d/stdout" 7>"$d/stderr" || exit 126
/bin/busybox cat "$p/o" >&6 6>&- 7>&- &
o=$!
/bin/busybox cat "$p/e" >&7 6>&- 7>&- &
e=$!
exec 6>&- 7>&-
# Opening a FIFO for writing waits for its reader, so both copiers run.
exec 3>"$p/o" 4>"$p/e"
if [ "$in" = chunks ]; then
	/bin/busybox sh ` + guestShare + `/.pocketci/stdin "$d" "$p/i" 2>/dev/null &
	exec 5<"$p/i"
else
	exec 5</dev/null
fi
rm -rf "$p"
g=
if [ "$mem" != 0 ] || [ "$cpuw" != 0 ]; then
	g=/sys/fs/cgroup/task-$$
	mkdir "$g" || exit 126
	if [ "$mem" != 0 ]; then echo "$mem" >"$g/memory.max" || exit 126; fi
	if [ "$cpuw" != 0 ]; then echo "$cpuw" >"$g/cpu.weight" || exit 126; fi
	echo $$ >"$g/cgroup.procs" || exit 126
fi
# A subshell that execs the task: the shell's own "Killed" report of a
# task killed by a signal goes to the wrapper's stderr, not the task's.
(
	exec <&5 >&3 2>&4 3>&- 4>&- 5<&-
	exec "$@"
)
s=$?
exec 3>&- 4>&- 5<&-
for k in $(/bin/busybox awk -v s=$$ '{p=$1; sub(/.*\) /, ""); if ($4 == s) print p}' /proc/[0-9]*/stat 2>/dev/null); do
	case $k in $$ | $o | $e) ;; *) kill -9 "$k" 2>/dev/null ;; esac
done
if [ -n "$g" ]; then
	echo $$ >/sys/fs/cgroup/cgroup.procs
	i=0
	while ! rmdir "$g" 2>/dev/null && [ $i -lt 100 ]; do usleep 10000; i=$((i + 1)); done
fi
wait $o || w=stdout
wait $e || w="$w stderr"
if [ -n "$w" ] && [ $s = 0 ]; then
	echo "pocketci: copying the task's$w to the share failed" >>"$d/stderr"
	s=125
fi
exit $s
`

// stdinScript feeds a task's stdin: the host writes chunk files stdin.0,
// stdin.1, ... (each renamed into place when complete) and stdin.end after
// the last; this loop copies them in order into the FIFO and deletes each,
// which tells the host it may write more. Arguments: TASKDIR FIFO.
const stdinScript = `# pocketci stdin feeder (written by the qemu driver)
d=$1
exec >"$2"
i=0 w=1000
while :; do
	if [ -e "$d/stdin.$i" ]; then
		dd if="$d/stdin.$i" bs=512k 2>/dev/null || exit 0
		rm -f "$d/stdin.$i"
		i=$((i + 1)) w=1000
	elif [ -e "$d/stdin.end" ]; then
		[ -e "$d/stdin.$i" ] || exit 0
	else
		usleep $w
		[ $w -lt 50000 ] && w=$((w * 2))
	fi
done
`

// imageScript runs a task in its image, inside the mount namespace the
// wrapper's unshare made (so every mount, and the per-task tmpfs holding
// the overlay's writable layer, vanishes with the task). Arguments: ROOT
// WORKDIR MOUNTS USER NAME=VALUE... PROG ARGS. The guest's busybox is bound
// in at /.pocketci for chroot's first step; the task itself runs the
// image's own programs with the image's PATH.
const imageScript = `# pocketci image runner (written by the qemu driver)
r=$1 wd=$2 m=$3 u=$4
shift 4
grep -q overlay /proc/filesystems || insmod /lib/modules/overlay.ko 2>/dev/null
grep -q overlay /proc/filesystems || { echo "pocketci: the guest has no overlayfs (rebuild it with guest/build.sh)" >&2; exit 126; }
t=/run/pocketci-root
mkdir -p $t && mount -t tmpfs -o mode=0755 pocketci-task $t && mkdir $t/u $t/w $t/m || exit 126
mount -t overlay overlay -o "lowerdir=$r,upperdir=$t/u,workdir=$t/w" $t/m || exit 126
R=$t/m
mkdir -p $R/proc $R/dev $R/sys $R/tmp $R/.pocketci "$R$wd" || exit 126
mount -t proc proc $R/proc && mount --rbind /dev $R/dev && mount -t sysfs sysfs $R/sys || exit 126
: >$R/.pocketci/busybox && mount --bind /bin/busybox $R/.pocketci/busybox || exit 126
for a in sh env su; do ln -s busybox $R/.pocketci/$a; done
o=$IFS
IFS='
'
for e in $m; do
	src=${e%%	*} dst=${e#*	}
	mkdir -p "$R$dst" && mount --bind "$src" "$R$dst" || exit 126
done
IFS=$o
case $u in
"" | root | 0 | 0:0)
	exec chroot $R /.pocketci/sh -c 'cd "$0" || exit 126; exec /.pocketci/env -i "$@"' "$wd" "$@" ;;
*[!0-9:]*) ;;
*)
	uid=${u%%:*} gid=${u#*:}
	[ "$gid" = "$u" ] && gid=$uid
	n=uid$uid-gid$gid
	grep -q "^$n:" $R/etc/passwd 2>/dev/null || echo "$n:x:$uid:$gid::/:/.pocketci/sh" >>$R/etc/passwd
	u=$n
	;;
esac
exec chroot $R /.pocketci/su -p -s /.pocketci/sh -c 'cd "$1" || exit 126; shift; exec /.pocketci/env -i "$@"' "$u" -- pocketci "$wd" "$@"
`

// writeGuestScripts puts the helpers in dir (the share's .pocketci).
func writeGuestScripts(dir string) error {
	for name, body := range map[string]string{"stdin": stdinScript, "image": imageScript} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o755); err != nil {
			return fmt.Errorf("write guest helper %s: %w", name, err)
		}
	}
	return nil
}

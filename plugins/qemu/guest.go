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
// STDIN ROOT WORKDIR MOUNTS MEMORY CPUWEIGHT SLOT NAME=VALUE... PROG ARGS`.
// It is started by guest-exec through `busybox setsid`, so the task is its
// own session and process group (Cleanup kills the group). The shell's own
// variables never reach the task: `env -i` starts it with exactly the given
// variables. With an empty ROOT the task runs in the guest's own userland,
// in TASKDIR/work (where the host linked its mounts); otherwise imageScript
// runs it chrooted in ROOT (an unpacked image) in a mount namespace of its
// own, in WORKDIR, with MOUNTS ("SRC<tab>DST" lines) bound in. A non-zero
// MEMORY (bytes) or CPUWEIGHT sets memory.max and cpu.weight on the task's
// cgroup (/sys/fs/cgroup/slot-SLOT: SLOT is a number the host gives each
// running task and reuses after it ended); the kernel's OOM killer
// SIGKILLs a task over its limit (exit 137).
// The task's stdout and stderr are pipes, as on every other
// platform (a task that opens /dev/stdout gets the pipe again, not a file
// it would truncate); a cat per stream copies them into the files on the
// share. The task runs in a cgroup of its own; when it exits, whatever it
// left running (background children, setsid or not) is killed through
// cgroup.kill, as a container's init would, and the wrapper exits with the
// task's status once the copies are done.
const runScript = `# pocketci task wrapper (written by the qemu driver)
d=$1 u=$2 in=$3 root=$4 wd=$5 mnts=$6 mem=$7 cpuw=$8 slot=$9
shift 9
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
# A slot (one per task running at once, reused) holds the output FIFOs and
# the cgroup, so a task creates and removes neither.
p=/run/pocketci-io/$slot
g=/sys/fs/cgroup/slot-$slot
if [ ! -p "$p/e" ]; then
	mkdir -p -m 0700 "$p" && /bin/busybox mkfifo -m 0600 "$p/o" "$p/e" || exit 126
fi
[ -d "$g" ] || mkdir "$g" || exit 126
exec 6>"$d/stdout" 7>"$d/stderr" || exit 126
/bin/busybox cat "$p/o" >&6 6>&- 7>&- &
o=$!
/bin/busybox cat "$p/e" >&7 6>&- 7>&- &
e=$!
exec 6>&- 7>&-
# Opening a FIFO for writing waits for its reader, so both copiers run.
exec 3>"$p/o" 4>"$p/e"
# The slot's cgroup: the task's limits, and the one handle on all its
# descendants (setsid or not) for cgroup.kill when it ends or is cleaned up.
[ "$mem" = 0 ] && mem=max
[ "$cpuw" = 0 ] && cpuw=100
echo "$mem" >"$g/memory.max" && echo "$cpuw" >"$g/cpu.weight" && echo $$ >"$g/cgroup.procs" || exit 126
: >"$p/pid"
# A subshell that execs the task: the shell's own "Killed" report of a
# task killed by a signal goes to the wrapper's stderr, not the task's.
# Stdin is an anonymous pipe from the feeder (a FIFO would block a task
# that reopens /dev/stdin after the feeder closed it); the subshell tells
# the feeder its pid, so the feeder ends with the task.
if [ "$in" = chunks ]; then
	/bin/busybox sh ` + guestShare + `/.pocketci/stdin "$d" "$p/pid" 2>/dev/null 3>&- 4>&- | (
		read -r self _ </proc/self/stat && echo "$self" >"$p/pid"
		exec >&3 2>&4 3>&- 4>&-
		exec "$@"
	)
else
	(
		exec </dev/null >&3 2>&4 3>&- 4>&-
		exec "$@"
	)
fi
s=$?
exec 3>&- 4>&-
echo $$ >/sys/fs/cgroup/cgroup.procs
echo 1 >"$g/cgroup.kill"
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
// the last; this loop copies them in order to its stdout (a pipe to the
// task) and deletes each, which tells the host it may write more. It ends
// at stdin.end, when the task stops reading (EPIPE), or when the task's
// process (its pid in PIDFILE) is gone.
const stdinScript = `# pocketci stdin feeder (written by the qemu driver)
# Arguments: TASKDIR PIDFILE; writes the task's stdin to its own stdout.
d=$1 pf=$2 tp=
i=0 w=1000
while :; do
	if [ -e "$d/stdin.$i" ]; then
		dd if="$d/stdin.$i" bs=512k 2>/dev/null || exit 0
		rm -f "$d/stdin.$i"
		i=$((i + 1)) w=1000
	elif [ -e "$d/stdin.end" ]; then
		[ -e "$d/stdin.$i" ] || exit 0
	else
		# The task ended (or became a zombie): nobody reads any more.
		[ -z "$tp" ] && [ -e "$pf" ] && read -r tp <"$pf"
		if [ -n "$tp" ]; then
			st=
			read -r st <"/proc/$tp/stat" 2>/dev/null
			case $st in "" | *") Z "*) exit 0 ;; esac
		fi
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

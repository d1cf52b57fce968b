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
// STDIN NAME=VALUE... PROG ARGS`.
// It is started by guest-exec through `busybox setsid`, so the task is its
// own process group (Cleanup kills the group). The shell's own variables
// never reach the task: `env -i` starts it with exactly the given variables.
const runScript = `# pocketci task wrapper (written by the qemu driver)
d=$1 u=$2 in=$3
shift 3
exec >"$d/stdout" 2>"$d/stderr"
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
if [ "$in" = chunks ]; then
	f=/tmp/pocketci-stdin.$$
	rm -f "$f"
	/bin/busybox mkfifo -m 0600 "$f" || exit 126
	/bin/busybox sh ` + guestShare + `/.pocketci/stdin "$d" "$f" 2>/dev/null &
	exec "$@" <"$f"
fi
exec "$@" </dev/null
`

// stdinScript feeds a task's stdin: the host writes chunk files stdin.0,
// stdin.1, ... (each renamed into place when complete) and stdin.end after
// the last; this loop copies them in order into the FIFO and deletes each,
// which tells the host it may write more. Arguments: TASKDIR FIFO.
const stdinScript = `# pocketci stdin feeder (written by the qemu driver)
d=$1
exec >"$2"
rm -f "$2"
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

// writeGuestScripts puts the helpers in dir (the share's .pocketci).
func writeGuestScripts(dir string) error {
	for name, body := range map[string]string{"stdin": stdinScript} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o755); err != nil {
			return fmt.Errorf("write guest helper %s: %w", name, err)
		}
	}
	return nil
}

#!/bin/sh
# build.sh builds the pocketci QEMU guest offline from Debian packages:
#   vmlinux            the standard linux-image-amd64 kernel, uncompressed ELF (PVH boot)
#   initramfs.cpio.gz  busybox-static, qemu-ga and its host libraries, the virtio/9p
#                      modules, /init, /sbin/start-qga and /sbin/shutdown
#   pocketci-guestd    the task daemon (guest/guestd, static Go), which the driver copies
#                      into every guest it boots; rebuilt on every run (a no-op when its
#                      sources did not change: the bytes, and so the mtime, stay the same)
#   stamp              the versions of every input; the build is skipped when it matches
#
# Usage: build.sh [OUTDIR]   (default ${POCKETCI_QEMU_IMAGE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/pocketci/qemu})
# Runs as root on Debian 12 after `apt-get install qemu-system-x86 busybox-static`;
# it installs the few other tools it needs (xz-utils, cpio) itself.
set -eu

OUT=${1:-${POCKETCI_QEMU_IMAGE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/pocketci/qemu}}
FORCE=${POCKETCI_QEMU_FORCE_BUILD:-0}

log() { echo "build.sh: $*" >&2; }
die() { log "error: $*"; exit 1; }

need_tools() {
	missing=""
	command -v xz >/dev/null 2>&1 || missing="$missing xz-utils"
	command -v cpio >/dev/null 2>&1 || missing="$missing cpio"
	command -v gzip >/dev/null 2>&1 || missing="$missing gzip"
	[ -x /bin/busybox ] || missing="$missing busybox-static"
	command -v qemu-system-x86_64 >/dev/null 2>&1 || missing="$missing qemu-system-x86"
	if [ -n "$missing" ]; then
		log "installing:$missing"
		apt-get install -y --no-install-recommends $missing >&2 || die "apt-get install$missing failed"
	fi
}

pkgver() { dpkg-query -W -f '${Version}' "$1" 2>/dev/null || true; }
candidate() { apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ {print $2; exit}'; }

# The task daemon is ours, not a Debian package: built with the Go toolchain
# from this module, replaced only when its bytes changed (the driver's boot
# snapshot key covers its mtime).
build_guestd() {
	GO=$(command -v go || echo /usr/local/go/bin/go)
	[ -x "$GO" ] || die "go is needed to build pocketci-guestd"
	mkdir -p "$OUT"
	(cd "$(dirname "$0")/.." && CGO_ENABLED=0 GOOS=linux GOARCH=amd64 "$GO" build -trimpath -ldflags='-s -w' \
		-o "$OUT/pocketci-guestd.new" ./guest/guestd) || die "go build ./guest/guestd failed"
	if cmp -s "$OUT/pocketci-guestd.new" "$OUT/pocketci-guestd"; then
		rm -f "$OUT/pocketci-guestd.new"
	else
		mv -f "$OUT/pocketci-guestd.new" "$OUT/pocketci-guestd"
		log "built $OUT/pocketci-guestd"
	fi
}
build_guestd

# Fast path: nothing apt or dpkg knows changed since the last build of this script.
SELF_SUM=$(sha256sum "$0" | cut -d' ' -f1)
if [ "$FORCE" != 1 ] && [ -f "$OUT/stamp" ] && [ -f "$OUT/vmlinux" ] && [ -f "$OUT/initramfs.cpio.gz" ] &&
	grep -qx "script=$SELF_SUM" "$OUT/stamp" &&
	[ -z "$(find /var/lib/apt/lists /var/lib/dpkg/status -maxdepth 1 -newer "$OUT/stamp" 2>/dev/null | head -1)" ]; then
	log "up to date: $OUT"
	exit 0
fi

# The ABI package changes with security updates: resolve it every time.
KPKG=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
[ -n "$KPKG" ] || die "cannot resolve the kernel package behind linux-image-amd64 (run apt-get update)"
KVER_PKG=$(candidate "$KPKG")
QGA_VER=$(candidate qemu-guest-agent)
[ -n "$QGA_VER" ] && [ "$QGA_VER" != "(none)" ] || die "qemu-guest-agent is not available from apt (run apt-get update)"

need_tools
STAMP="script=$SELF_SUM
kernel=$KPKG $KVER_PKG
qemu-guest-agent=$QGA_VER
busybox=$(pkgver busybox-static)
libglib=$(pkgver libglib2.0-0)
libc=$(pkgver libc6)"

if [ "$FORCE" != 1 ] && [ -f "$OUT/stamp" ] && [ -f "$OUT/vmlinux" ] && [ -f "$OUT/initramfs.cpio.gz" ] &&
	[ "$(cat "$OUT/stamp")" = "$STAMP" ]; then
	log "up to date: $OUT"
	exit 0
fi

mkdir -p "$OUT/debs"
WORK=$(mktemp -d "$OUT/.build.XXXXXX")
trap 'rm -rf "$WORK"' EXIT INT TERM

# find_deb PKG VERSION prints the cached .deb of exactly that version, if any.
find_deb() {
	for f in "$OUT/debs/$1"_*.deb; do
		[ -f "$f" ] && [ "$(dpkg-deb -f "$f" Version)" = "$2" ] && { echo "$f"; return 0; }
	done
	return 0
}
fetch_deb() {
	f=$(find_deb "$1" "$2")
	if [ -z "$f" ]; then
		log "downloading $1 $2"
		(cd "$OUT/debs" && apt-get download "$1=$2" 2>&1 | grep -v 'unsandboxed' >&2) || true
		f=$(find_deb "$1" "$2")
		[ -n "$f" ] || die "apt-get download $1=$2 failed"
	fi
	echo "$f"
}
KDEB=$(fetch_deb "$KPKG" "$KVER_PKG")
QDEB=$(fetch_deb qemu-guest-agent "$QGA_VER")
# Old versions are dropped from the cache.
for f in "$OUT/debs"/*.deb; do
	[ "$f" = "$KDEB" ] || [ "$f" = "$QDEB" ] || rm -f "$f"
done

KVER=${KPKG#linux-image-}
MODS="drivers/virtio/virtio_ring.ko
drivers/virtio/virtio.ko
drivers/virtio/virtio_pci_legacy_dev.ko
drivers/virtio/virtio_pci_modern_dev.ko
drivers/virtio/virtio_pci.ko
drivers/virtio/virtio_mmio.ko
drivers/char/virtio_console.ko
fs/netfs/netfs.ko
fs/fscache/fscache.ko
net/9p/9pnet.ko
net/9p/9pnet_virtio.ko
fs/9p/9p.ko"
# Loaded on demand by the driver (not at boot): overlayfs for tasks that run
# in their own image.
LAZY_MODS="fs/overlayfs/overlay.ko"

log "extracting the kernel $KVER"
mkdir -p "$WORK/k"
paths="./boot/vmlinuz-$KVER"
for m in $MODS $LAZY_MODS; do paths="$paths ./lib/modules/$KVER/kernel/$m"; done
# shellcheck disable=SC2086
dpkg-deb --fsys-tarfile "$KDEB" | tar -x -C "$WORK/k" $paths

# The bzImage carries an XZ stream; the uncompressed ELF boots directly through PVH.
OFF=$(LC_ALL=C grep -obUaP '\xfd7zXZ\x00' "$WORK/k/boot/vmlinuz-$KVER" | head -1 | cut -d: -f1)
[ -n "$OFF" ] || die "no XZ stream in vmlinuz-$KVER"
tail -c +$((OFF + 1)) "$WORK/k/boot/vmlinuz-$KVER" | xz -dc --single-stream >"$WORK/vmlinux" 2>/dev/null || true
[ "$(head -c 4 "$WORK/vmlinux" | od -An -c | tr -d ' ')" = '177ELF' ] || die "the extracted vmlinux is not an ELF file"

log "building the initramfs"
R="$WORK/root"
mkdir -p "$R/bin" "$R/sbin" "$R/usr/bin" "$R/usr/sbin" "$R/etc" "$R/proc" "$R/sys" "$R/dev" "$R/run" "$R/tmp" \
	"$R/mnt/share" "$R/lib/modules" "$R/root" "$R/var"
ln -s /run "$R/var/run"
cp /bin/busybox "$R/bin/busybox"
for a in $(/bin/busybox --list); do
	[ "$a" = busybox ] || ln -sf busybox "$R/bin/$a"
done
# init and shutdown are our own scripts below.
rm -f "$R/bin/init" "$R/sbin/init"
ln -s busybox "$R/bin/init"

dpkg-deb --fsys-tarfile "$QDEB" | tar -x -C "$WORK" ./usr/sbin/qemu-ga
cp "$WORK/usr/sbin/qemu-ga" "$R/usr/sbin/qemu-ga"
for lib in $(ldd "$WORK/usr/sbin/qemu-ga" | awk '/=> \// {print $3} /^\t\/.*\(0x/ {print $1}'); do
	mkdir -p "$R$(dirname "$lib")"
	cp -L "$lib" "$R$lib"
done

: >"$R/etc/modules.order"
for m in $MODS; do
	b=$(basename "$m")
	cp "$WORK/k/lib/modules/$KVER/kernel/$m" "$R/lib/modules/$b"
	echo "$b" >>"$R/etc/modules.order"
done
for m in $LAZY_MODS; do
	cp "$WORK/k/lib/modules/$KVER/kernel/$m" "$R/lib/modules/$(basename "$m")"
done

cat >"$R/etc/passwd" <<'P'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/sh
P
cat >"$R/etc/group" <<'G'
root:x:0:
nogroup:x:65534:
G
echo /bin/sh >"$R/etc/shells"
echo pocketci >"$R/etc/hostname"

cat >"$R/init" <<'I'
#!/bin/busybox sh
# pocketci guest /init: mounts, modules, 9p shares at /mnt/<tag>, then busybox
# init (PID 1, reaps orphans) respawning qemu-ga.
export PATH=/sbin:/usr/sbin:/bin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts
mount -t devpts devpts /dev/pts
mount -t tmpfs -o mode=0755 tmpfs /run
mount -t tmpfs -o mode=1777 tmpfs /tmp
while read -r m; do
	insmod "/lib/modules/$m" || echo "pocketci-init: insmod $m failed" >/dev/console
done </etc/modules.order
for t in /sys/bus/virtio/drivers/9pnet_virtio/virtio*/mount_tag; do
	[ -e "$t" ] || continue
	tag=$(tr -d '\000' <"$t")
	mkdir -p "/mnt/$tag"
	mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,cache=none "$tag" "/mnt/$tag" ||
		echo "pocketci-init: mount 9p $tag failed" >/dev/console
done
hostname -F /etc/hostname
echo '::respawn:/sbin/start-qga' >/etc/inittab
echo 'pocketci-init: ready' >/dev/console
exec /bin/init
I

cat >"$R/sbin/start-qga" <<'Q'
#!/bin/busybox sh
# There is no udev: find the agent's virtio port by name.
while :; do
	for n in /sys/class/virtio-ports/vport*/name; do
		if [ -e "$n" ] && [ "$(cat "$n")" = org.qemu.guest_agent.0 ]; then
			p=${n%/name}
			exec /usr/sbin/qemu-ga -m virtio-serial -p "/dev/${p##*/}" -t /run -f /run/qemu-ga.pid
		fi
	done
	usleep 10000
done
Q

cat >"$R/sbin/shutdown" <<'S'
#!/bin/busybox sh
# guest-shutdown runs "/sbin/shutdown -h -P +0"; busybox has no shutdown applet.
sync
exec /bin/busybox poweroff -f
S
chmod 0755 "$R/init" "$R/sbin/start-qga" "$R/sbin/shutdown"

(cd "$R" && find . | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0) | gzip -6 >"$WORK/initramfs.cpio.gz"

mv -f "$WORK/vmlinux" "$OUT/vmlinux"
mv -f "$WORK/initramfs.cpio.gz" "$OUT/initramfs.cpio.gz"
printf '%s\n' "$STAMP" >"$OUT/stamp.tmp"
mv -f "$OUT/stamp.tmp" "$OUT/stamp"
log "built $OUT (vmlinux $(du -h "$OUT/vmlinux" | cut -f1), initramfs $(du -h "$OUT/initramfs.cpio.gz" | cut -f1))"

#!/usr/bin/env bash
# Builds busybox:latest offline from Debian's busybox-static with `docker import`.
# Skips when the image already exists. Needs root (apt-get) only when the static
# busybox is not installed yet.
set -euo pipefail

IMAGE="${IMAGE:-busybox:latest}"
BUSYBOX="${BUSYBOX:-/bin/busybox}"

die() { echo "busybox-image.sh: error: $*" >&2; exit 1; }

command -v docker >/dev/null 2>&1 || die "docker CLI not found in PATH"
docker info >/dev/null 2>&1 || die "docker engine does not answer (is dockerd running? DOCKER_HOST=${DOCKER_HOST:-unset})"

if docker image inspect "$IMAGE" >/dev/null 2>&1; then
  echo "busybox-image.sh: $IMAGE already present, skipping"
  exit 0
fi

is_static() {
  [ -x "$1" ] || return 1
  if command -v file >/dev/null 2>&1; then
    file -L "$1" | grep -q 'statically linked' && return 0
    return 1
  fi
  # ldd exits non-zero ("not a dynamic executable") for static binaries.
  ! ldd "$1" >/dev/null 2>&1
}

if ! is_static "$BUSYBOX"; then
  echo "busybox-image.sh: $BUSYBOX is missing or not static; installing busybox-static" >&2
  if [ "$(id -u)" -ne 0 ]; then
    die "$BUSYBOX is not a static busybox and installing busybox-static needs root (apt-get install busybox-static)"
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y busybox-static >&2 \
    || { apt-get update >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y busybox-static >&2; } \
    || die "apt-get install busybox-static failed"
  BUSYBOX=/bin/busybox
  is_static "$BUSYBOX" || die "$BUSYBOX is still not a static binary after installing busybox-static"
fi

ROOTFS="$(mktemp -d)"
trap 'rm -rf "$ROOTFS"' EXIT

mkdir -p "$ROOTFS/bin" "$ROOTFS/tmp" "$ROOTFS/root" "$ROOTFS/home" "$ROOTFS/etc"
cp "$BUSYBOX" "$ROOTFS/bin/busybox"
chmod 0755 "$ROOTFS/bin/busybox"
chmod 1777 "$ROOTFS/tmp"
chmod 0700 "$ROOTFS/root"

# One symlink per applet at the path busybox itself reports.
"$BUSYBOX" --list-full | while read -r applet; do
  [ -n "$applet" ] || continue
  [ "$applet" = "bin/busybox" ] && continue
  mkdir -p "$ROOTFS/$(dirname "$applet")"
  ln -sf /bin/busybox "$ROOTFS/$applet"
done

cat > "$ROOTFS/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/home:/bin/false
PASSWD
cat > "$ROOTFS/etc/group" <<'GROUP'
root:x:0:
nogroup:x:65534:
GROUP

tar --numeric-owner --owner=0 --group=0 -C "$ROOTFS" -c . \
  | docker import \
      -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      -c 'CMD ["sh"]' \
      - "$IMAGE" >/dev/null \
  || die "docker import of $IMAGE failed"

docker run --rm "$IMAGE" true || die "$IMAGE was imported but 'docker run --rm $IMAGE true' failed"
echo "busybox-image.sh: built $IMAGE from $BUSYBOX"

#!/usr/bin/env bash
# Installs the Debian packages that `make test` needs when they are missing.
# As root it installs them; otherwise it prints the one command to run.
set -euo pipefail

# package: why
pkgs=(
	busybox-static   # the offline busybox image for docker, the qemu guest's userland
	qemu-system-x86  # the qemu driver
	cpio             # the qemu guest's initramfs
	xz-utils         # the qemu guest's kernel
	file             # the qemu guest build checks what it packs
	util-linux       # unshare, for the native driver and the template
	e2fsprogs        # mkfs for the full-disk tests
	containerd       # the k8s test cluster's own containerd (never Docker's)
	runc
	containernetworking-plugins
	openssl          # the k8s test cluster's certificates
	curl
	iproute2
)
need=()
for p in "${pkgs[@]}"; do
	dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
[ "${#need[@]}" -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
	echo "missing Debian packages; run:" >&2
	echo "  sudo apt-get update && sudo apt-get install -y --no-install-recommends ${need[*]}" >&2
	exit 1
fi
echo "== apt-get install ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}"

#!/usr/bin/env bash
# Builds the test cluster's images offline and imports them into the cluster's containerd:
#   docker.io/library/busybox:latest   a rootfs of Debian's busybox-static and its applet links
#   localhost/pocketci-pause:1         the same rootfs, entrypoint sleep (the pod sandbox)
# Each is packed as a docker-archive tar (manifest.json, a config json, one layer tar) and
# imported with `ctr -n k8s.io images import`. Usage: images.sh CTR_ADDRESS WORKDIR
set -euo pipefail
addr=$1 work=$2
BUSYBOX=${BUSYBOX:-/bin/busybox}
file -L "$BUSYBOX" 2>/dev/null | grep -q 'statically linked' ||
	{ echo "images.sh: $BUSYBOX is not a static busybox (apt-get install busybox-static)" >&2; exit 1; }

rm -rf "$work" && mkdir -p "$work/rootfs"
root=$work/rootfs
mkdir -p "$root/bin" "$root/tmp" "$root/root" "$root/etc" "$root/proc" "$root/sys" "$root/dev"
cp "$BUSYBOX" "$root/bin/busybox" && chmod 0755 "$root/bin/busybox"
chmod 1777 "$root/tmp" && chmod 0700 "$root/root"
"$BUSYBOX" --list-full | while read -r applet; do
	[ -n "$applet" ] && [ "$applet" != bin/busybox ] || continue
	mkdir -p "$root/$(dirname "$applet")"
	ln -sf /bin/busybox "$root/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$root/etc/passwd"
printf 'root:x:0:\nnobody:x:65534:\n' >"$root/etc/group"
# A fixed mtime and owner make the layer, and so the image ID, the same on every build.
tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$root" -cf "$work/layer.tar" .
diff_id=sha256:$(sha256sum "$work/layer.tar" | cut -d' ' -f1)

pack() { # pack NAME ENTRYPOINT_JSON CMD_JSON
	local name=$1 entry=$2 cmd=$3 dir=$work/$(echo "$1" | tr '/:' '__')
	mkdir -p "$dir"
	cp "$work/layer.tar" "$dir/layer.tar"
	cat >"$dir/config.json" <<JSON
{"architecture":"amd64","os":"linux","created":"1970-01-01T00:00:00Z","config":{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"Entrypoint":$entry,"Cmd":$cmd},"rootfs":{"type":"layers","diff_ids":["$diff_id"]}}
JSON
	printf '[{"Config":"config.json","RepoTags":["%s"],"Layers":["layer.tar"]}]\n' "$name" >"$dir/manifest.json"
	tar -C "$dir" -cf "$dir.tar" manifest.json config.json layer.tar
	ctr --address "$addr" -n k8s.io images import --snapshotter overlayfs "$dir.tar" >/dev/null
	grep -qx "$name" <<<"$(ctr --address "$addr" -n k8s.io images ls -q)" ||
		{ echo "images.sh: $name was not imported" >&2; exit 1; }
}
pack docker.io/library/busybox:latest null '["sh"]'
pack localhost/pocketci-pause:1 '["/bin/sleep","2147483647"]' null
rm -rf "$work"

#!/usr/bin/env bash
# Stops the test cluster and removes every trace of it: its processes (kubelet, the pods'
# containers and shims, containerd, scheduler, controller-manager, apiserver, etcd), the
# mounts under the cluster directory, the pods' cgroups, the CNI bridge, the shims' sockets,
# the paths kubelet and the hostPath provisioner write outside the cluster directory (when
# up.sh found them absent), and the cluster directory. Safe to run when nothing is running.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/versions.sh"
D=$CLUSTER_DIR
log() { echo "cluster-down: $*" >&2; }
[ "$(id -u)" -eq 0 ] || { log "error: needs root"; exit 1; }
t0=$SECONDS

# pid_alive PID: the process runs (a zombie whose parent has not reaped it yet does not count).
pid_alive() { [ -n "$1" ] && kill -0 "$1" 2>/dev/null && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]; }

stop() { # stop NAME: TERM, then KILL after 10 s
	local p; p=$(cat "$D/run/$1.pid" 2>/dev/null) || return 0
	pid_alive "$p" || return 0
	kill -TERM "$p" 2>/dev/null
	for _ in $(seq 1 50); do pid_alive "$p" || return 0; sleep 0.2; done
	kill -KILL "$p" 2>/dev/null; sleep 0.2
}

stop kubelet
sock=$D/containerd/containerd.sock
# The pods' containers: through containerd when it answers, then runc directly.
if [ -S "$sock" ]; then
	CTR="ctr --address $sock -n k8s.io"
	for c in $($CTR tasks ls -q 2>/dev/null); do timeout 10 $CTR tasks kill -a -s SIGKILL "$c" >/dev/null 2>&1; done
	sleep 0.5
	for c in $($CTR containers ls -q 2>/dev/null); do
		timeout 10 $CTR tasks delete -f "$c" >/dev/null 2>&1
		timeout 10 $CTR containers delete "$c" >/dev/null 2>&1
	done
fi
if [ -d "$D/runc/k8s.io" ]; then
	for c in $(runc --root "$D/runc/k8s.io" list -q 2>/dev/null); do runc --root "$D/runc/k8s.io" delete -f "$c" >/dev/null 2>&1; done
fi
# Our shims (never Docker's): the ones started with our containerd's address.
for p in $(pgrep -f "containerd-shim-runc-v2 .*-address $sock" 2>/dev/null); do
	id=$(tr '\0' '\n' <"/proc/$p/cmdline" 2>/dev/null | sed -n '/^-id$/{n;p}')
	kill -KILL "$p" 2>/dev/null
	# containerd 1.6 names a shim's socket sha256(<address>/<namespace>/<id>) under /run/containerd/s.
	[ -n "$id" ] && rm -f "/run/containerd/s/$(printf '%s' "$sock/k8s.io/$id" | sha256sum | cut -d' ' -f1)"
done
for c in containerd kube-scheduler kube-controller-manager kube-apiserver etcd; do stop "$c"; done

# Mounts under the cluster directory (netns, kubelet's bind mount of its root, pod volumes,
# overlay rootfs), deepest first.
if [ -d "$D" ]; then
	awk -v d="$D" '$5 == d || index($5, d "/") == 1 {print $5}' /proc/self/mountinfo | sort -r | while read -r m; do
		umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || log "could not unmount $m"
	done
fi
ip link show "$BRIDGE" >/dev/null 2>&1 && ip link delete "$BRIDGE"
# kubelet's cgroups (cgroupfs driver): kubepods in every hierarchy, deepest first.
for h in /sys/fs/cgroup/*/ /sys/fs/cgroup/; do
	[ -d "$h/kubepods" ] || continue
	find "$h/kubepods" -depth -type d -exec rmdir {} \; 2>/dev/null
	[ -d "$h/kubepods" ] && log "could not remove cgroup $h/kubepods"
done
# Paths outside the cluster directory that up.sh found absent.
if [ -f "$D/created-outside" ]; then
	while read -r p; do [ -n "$p" ] && rm -rf "$p"; done <"$D/created-outside"
fi
# /var/log/containers links to pod logs of ours point into /var/log/pods/<namespace>_<pod>_<uid>.
rm -rf "$D"
log "done in $((SECONDS - t0)) s"

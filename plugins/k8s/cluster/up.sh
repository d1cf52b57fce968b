#!/usr/bin/env bash
# Starts the single-node test cluster (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, its own containerd, kubelet), everything on 127.0.0.1, offline. Idempotent:
# a component already running is left alone. Builds the binaries first when they are not
# cached (build.sh). Prints the admin kubeconfig's path as its last line.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/versions.sh"
t0=$SECONDS
log() { echo "cluster: $*" >&2; }
die() { log "error: $*"; exit 1; }
[ "$(id -u)" -eq 0 ] || die "the test cluster needs root (containerd, kubelet, mounts, cgroups)"
for cmd in containerd runc ctr openssl curl file; do command -v $cmd >/dev/null || die "$cmd not found (see .ci/run for the Debian packages)"; done
[ -x /usr/lib/cni/bridge ] || die "/usr/lib/cni/bridge missing (apt-get install containernetworking-plugins)"

# pid_alive PID: the process runs (a zombie whose parent has not reaped it yet does not count).
pid_alive() { [ -n "$1" ] && kill -0 "$1" 2>/dev/null && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]; }

bash "$here/build.sh" >/dev/null
B=$K8S_BIN
D=$CLUSTER_DIR
# A cluster directory whose processes all died (a killed session, a reboot) holds stale mounts,
# netns and containerd state: clear it and start afresh.
if [ -d "$D/run" ]; then
	any=""
	for p in "$D"/run/*.pid; do [ -f "$p" ] && pid_alive "$(cat "$p")" && any=1; done
	if [ -z "$any" ]; then
		log "no process of the cluster in $D runs: removing its stale state first"
		bash "$here/down.sh"
	fi
fi
mkdir -p "$D"/{run,log,etcd,containerd,kubelet,cni/net.d,cni/ipam,runc}
bash "$here/certs.sh"
pki=$D/pki
node=$(hostname)
# kubelet, the CNI library and the hostPath provisioner write outside the cluster directory; down.sh removes
# those paths when they were not there before the first start.
for p in /var/lib/kubelet /var/log/pods /var/log/containers /var/lib/cni /tmp/hostpath_pv; do
	if [ ! -e "$p" ] && ! grep -qx "$p" "$D/created-outside" 2>/dev/null; then echo "$p" >>"$D/created-outside"; fi
done
KC="$B/kubectl --kubeconfig $KUBECONFIG_PATH"

alive() { local p; p=$(cat "$D/run/$1.pid" 2>/dev/null) && pid_alive "$p"; }
start() { # start NAME CMD...
	local name=$1; shift
	if alive "$name"; then return 0; fi
	log "starting $name"
	setsid "$@" </dev/null >>"$D/log/$name.log" 2>&1 &
	echo $! >"$D/run/$name.pid"
}
wait_for() { # wait_for WHAT SECONDS CMD...
	local what=$1 limit=$2; shift 2
	local end=$((SECONDS + limit))
	until "$@" >/dev/null 2>&1; do
		[ $SECONDS -lt $end ] || die "$what not ready after ${limit}s (logs in $D/log)"
		sleep 0.2
	done
}

# etcd
start etcd "$B/etcd" --name pocketci --data-dir "$D/etcd" \
	--listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
	--listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
	--initial-cluster "pocketci=http://127.0.0.1:$ETCD_PEER_PORT" --listen-metrics-urls "" \
	--quota-backend-bytes 2147483648 --log-level warn
wait_for etcd 60 curl -fsS "http://127.0.0.1:$ETCD_PORT/health"

# kube-apiserver
start kube-apiserver "$B/kube-apiserver" \
	--etcd-servers "http://127.0.0.1:$ETCD_PORT" \
	--bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$APISERVER_PORT" \
	--tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
	--client-ca-file "$pki/ca.crt" \
	--kubelet-client-certificate "$pki/apiserver-kubelet-client.crt" --kubelet-client-key "$pki/apiserver-kubelet-client.key" \
	--kubelet-certificate-authority "$pki/ca.crt" \
	--kubelet-preferred-address-types Hostname,InternalIP \
	--service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
	--service-account-issuer https://kubernetes.default.svc \
	--service-cluster-ip-range 10.96.0.0/24 \
	--endpoint-reconciler-type none \
	--authorization-mode Node,RBAC \
	--allow-privileged=true \
	--feature-gates PodLogsQuerySplitStreams=true \
	--profiling=false
wait_for kube-apiserver 120 $KC get --raw /readyz

# kube-controller-manager: the in-tree hostPath provisioner backs the test cluster's PVCs.
start kube-controller-manager "$B/kube-controller-manager" \
	--kubeconfig "$D/controller-manager.kubeconfig" \
	--authentication-kubeconfig "$D/controller-manager.kubeconfig" --authorization-kubeconfig "$D/controller-manager.kubeconfig" \
	--bind-address 127.0.0.1 --leader-elect=false \
	--service-account-private-key-file "$pki/sa.key" --root-ca-file "$pki/ca.crt" \
	--use-service-account-credentials=true \
	--enable-hostpath-provisioner=true \
	--controllers '*,-bootstrapsigner,-tokencleaner' \
	--profiling=false

# kube-scheduler
start kube-scheduler "$B/kube-scheduler" \
	--kubeconfig "$D/scheduler.kubeconfig" \
	--authentication-kubeconfig "$D/scheduler.kubeconfig" --authorization-kubeconfig "$D/scheduler.kubeconfig" \
	--bind-address 127.0.0.1 --leader-elect=false --profiling=false

# containerd: a second one, with its own root, state, socket and runc root (Docker's stays
# untouched at /run/containerd).
cat >"$D/containerd/config.toml" <<TOML
version = 2
root = "$D/containerd/root"
state = "$D/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.internal.v1.tracing", "io.containerd.tracing.processor.v1.otlp"]
[grpc]
  address = "$D/containerd/containerd.sock"
[ttrpc]
  address = "$D/containerd/containerd.sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "$D/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "localhost/pocketci-pause:1"
  restrict_oom_score_adj = true
  disable_apparmor = true
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$D/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$D/cni/net.d"
TOML
# Pods get an address on a loopback-range bridge with no gateway and no masquerade: an IP the
# apiserver accepts, and no network (what a CI task here should have).
cat >"$D/cni/net.d/10-pocketci.conflist" <<JSON
{"cniVersion": "1.0.0", "name": "pocketci", "plugins": [
  {"type": "bridge", "bridge": "$BRIDGE", "isGateway": false, "ipMasq": false, "hairpinMode": false,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "$POD_SUBNET"}]], "dataDir": "$D/cni/ipam"}}]}
JSON
# containerd's shim gives the log copy 2 s after a task exits, then closes it: under CPU
# contention the tail of a large output could miss that window. containerd, its shims and the
# log writer run at a higher priority (nice -10) so that they drain in time.
start containerd nice -n -10 containerd --config "$D/containerd/config.toml"
CTR="ctr --address $D/containerd/containerd.sock"
wait_for containerd 60 $CTR version
images=$($CTR -n k8s.io images ls -q)
if ! grep -qx localhost/pocketci-pause:1 <<<"$images" || ! grep -qx docker.io/library/busybox:latest <<<"$images"; then
	log "importing images"
	bash "$here/images.sh" "$D/containerd/containerd.sock" "$D/images"
fi

# kubelet
printf 'nameserver 127.0.0.1\n' >"$D/resolv.conf"
cat >"$D/kubelet.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 127.0.0.1
port: $KUBELET_PORT
healthzBindAddress: 127.0.0.1
healthzPort: 10248
readOnlyPort: 0
tlsCertFile: $pki/kubelet-serving.crt
tlsPrivateKeyFile: $pki/kubelet-serving.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $pki/ca.crt}
authorization: {mode: Webhook}
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
makeIPTablesUtilChains: false
resolvConf: $D/resolv.conf
serializeImagePulls: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "50Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
containerLogMaxSize: 1Gi
containerLogMaxFiles: 2
maxPods: 110
featureGates:
  PodLogsQuerySplitStreams: true
YAML
start kubelet "$B/kubelet" --config "$D/kubelet.yaml" --kubeconfig "$D/kubelet.kubeconfig" \
	--container-runtime-endpoint "unix://$D/containerd/containerd.sock" \
	--root-dir "$D/kubelet" --cert-dir "$D/kubelet/pki" --v 1

node_ok() {
	local s
	s=$($KC get node "$node" -o 'jsonpath={range .status.conditions[?(@.type=="Ready")]}{.status}{end}/{.spec.taints}' 2>/dev/null) || return 1
	[ "$s" = "True/" ]
}
wait_for "node $node (Ready, no taints)" 180 node_ok
wait_for "the default service account" 60 $KC -n default get serviceaccount default
if ! $KC get storageclass pocketci-hostpath >/dev/null 2>&1; then
	$KC apply -f - >/dev/null <<YAML
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: pocketci-hostpath
  annotations: {storageclass.kubernetes.io/is-default-class: "true"}
provisioner: kubernetes.io/host-path
reclaimPolicy: Delete
volumeBindingMode: Immediate
YAML
fi
log "ready in $((SECONDS - t0)) s (node $node, logs in $D/log)"
echo "$KUBECONFIG_PATH"

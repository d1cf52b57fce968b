# Sourced by the cluster scripts: the pinned versions and where their binaries are cached.
# The versions must match tools/go.mod and tools/etcd/go.mod (build.sh checks).
K8S_VERSION=v1.34.4
ETCD_VERSION=v3.6.16
K8S_CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/pocketci/k8s"
K8S_BIN="$K8S_CACHE/$K8S_VERSION-etcd-$ETCD_VERSION"
# Where the running cluster keeps its state, certificates, logs and kubeconfig.
CLUSTER_DIR="${POCKETCI_CLUSTER_DIR:-/var/lib/pocketci-k8s}"
KUBECONFIG_PATH="$CLUSTER_DIR/admin.kubeconfig"
# Everything listens on 127.0.0.1, on ports away from the usual ones.
ETCD_PORT=23790
ETCD_PEER_PORT=23800
APISERVER_PORT=16443
KUBELET_PORT=10250
BRIDGE=pcik8s0
POD_SUBNET=127.77.0.0/24

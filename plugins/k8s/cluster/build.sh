#!/usr/bin/env bash
# Builds the test cluster's binaries (kube-apiserver, kube-controller-manager, kube-scheduler,
# kubelet, kubectl from k8s.io/kubernetes; etcd from go.etcd.io/etcd/server/v3) at the versions
# pinned in tools/go.mod and tools/etcd/go.mod, and caches them by version under
# ${XDG_CACHE_HOME:-$HOME/.cache}/pocketci/k8s/<version>/. A cached binary is not rebuilt.
# Prints the cache directory as its last line.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=versions.sh
. "$here/versions.sh"
grep -q "k8s.io/kubernetes $K8S_VERSION" "$here/tools/go.mod" || { echo "tools/go.mod does not pin k8s.io/kubernetes $K8S_VERSION" >&2; exit 1; }
grep -q "go.etcd.io/etcd/server/v3 $ETCD_VERSION" "$here/tools/etcd/go.mod" || { echo "tools/etcd/go.mod does not pin etcd $ETCD_VERSION" >&2; exit 1; }
mkdir -p "$K8S_BIN"
export GOWORK=off GOFLAGS=-mod=mod CGO_ENABLED=0

major=${K8S_VERSION#v}; major=${major%%.*}
minor=${K8S_VERSION#v*.}; minor=${minor%%.*}
ldflags=""
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
	ldflags+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=$major -X $p.gitMinor=$minor"
	ldflags+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
done

build() { # build NAME PACKAGE DIR LDFLAGS
	local name=$1 pkg=$2 dir=$3 ld=$4
	if [ -x "$K8S_BIN/$name" ]; then return 0; fi
	echo "== building $name ($pkg)" >&2
	local start=$SECONDS
	(cd "$dir" && go build -trimpath -ldflags "-s -w $ld" -o "$K8S_BIN/.$name.tmp" "$pkg")
	mv "$K8S_BIN/.$name.tmp" "$K8S_BIN/$name"
	echo "== built $name in $((SECONDS - start)) s" >&2
}

build etcd . "$here/tools/etcd" ""
for c in kube-apiserver kubelet kube-controller-manager kube-scheduler kubectl; do
	build "$c" "k8s.io/kubernetes/cmd/$c" "$here/tools" "$ldflags"
done
echo "$K8S_BIN"

#!/usr/bin/env bash
# Makes the test cluster's CA, certificates, service-account key pair and kubeconfigs in
# $CLUSTER_DIR/pki with openssl. Existing files are kept. Usage: certs.sh (after versions.sh).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/versions.sh"
pki=$CLUSTER_DIR/pki
mkdir -p "$pki" && cd "$pki"
node=$(hostname)
days=3650

[ -f ca.key ] || {
	openssl genrsa -out ca.key 2048 2>/dev/null
	openssl req -x509 -new -key ca.key -days $days -subj "/CN=pocketci-test-ca" -out ca.crt
}
[ -f sa.key ] || {
	openssl genrsa -out sa.key 2048 2>/dev/null
	openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
}

cert() { # cert NAME SUBJECT [SANS]
	local name=$1 subj=$2 sans=${3:-}
	[ -f "$name.crt" ] && return 0
	openssl genrsa -out "$name.key" 2048 2>/dev/null
	openssl req -new -key "$name.key" -subj "$subj" -out "$name.csr"
	{
		echo "basicConstraints=CA:FALSE"
		echo "keyUsage=critical,digitalSignature,keyEncipherment"
		if [ -n "$sans" ]; then echo "extendedKeyUsage=serverAuth,clientAuth"; echo "subjectAltName=$sans"; else echo "extendedKeyUsage=clientAuth"; fi
	} >"$name.ext"
	openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days $days -extfile "$name.ext" -out "$name.crt" 2>/dev/null
	rm -f "$name.csr" "$name.ext"
}
cert apiserver "/CN=kube-apiserver" "IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:$node,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
cert admin "/O=system:masters/CN=pocketci-admin"
cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client"
cert controller-manager "/CN=system:kube-controller-manager"
cert scheduler "/CN=system:kube-scheduler"
cert kubelet "/O=system:nodes/CN=system:node:$node"
cert kubelet-serving "/CN=$node" "IP:127.0.0.1,DNS:localhost,DNS:$node"

kubeconfig() { # kubeconfig FILE CERT
	local file=$1 c=$2
	[ -f "$file" ] && return 0
	cat >"$file" <<KC
apiVersion: v1
kind: Config
clusters:
- name: pocketci
  cluster:
    server: https://127.0.0.1:$APISERVER_PORT
    certificate-authority: $pki/ca.crt
users:
- name: $c
  user:
    client-certificate: $pki/$c.crt
    client-key: $pki/$c.key
contexts:
- name: pocketci
  context: {cluster: pocketci, user: $c, namespace: default}
current-context: pocketci
KC
}
kubeconfig "$KUBECONFIG_PATH" admin
kubeconfig "$CLUSTER_DIR/controller-manager.kubeconfig" controller-manager
kubeconfig "$CLUSTER_DIR/scheduler.kubeconfig" scheduler
kubeconfig "$CLUSTER_DIR/kubelet.kubeconfig" kubelet
chmod 600 "$pki"/*.key

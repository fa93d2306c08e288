#!/usr/bin/env bash
# Installs etcd from Debian and builds kube-apiserver v1.20.2 (hack/kubernetes.sh),
# once per machine; prints the kube-apiserver binary's path.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
if ! dpkg -s etcd-server >/dev/null 2>&1; then
  echo "kube-apiserver.sh: installing etcd-server" >&2
  apt-get update -qq >&2
  apt-get install -y -qq etcd-server >&2
fi
echo "$(hack/kubernetes.sh kube-apiserver)/kube-apiserver"

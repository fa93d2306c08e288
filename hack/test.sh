#!/usr/bin/env bash
# The test command: formatting, clippy, then every test of the workspace, the
# end-to-end scenarios against a real kube-apiserver and etcd included.
# hack/kube-apiserver.sh installs etcd and builds kube-apiserver once per machine,
# hack/node.sh prepare the rest of a real node (kubelet, containerd, images);
# hack/chart.sh lints and renders the Helm chart with Helm's own engine.
set -euo pipefail
cd "$(dirname "$0")/.."
. hack/common.sh

# Real third-party programs the tests use: OpenSSL (PKCS#12 output, and
# `s_server` as a member the probes judge), nginx (a member that checks client
# certificates after the handshake), curl, Lua 5.1 (Argo CD's health checks,
# which Argo CD runs in gopher-lua, a Lua 5.1), ca-certificates. nginx is installed without
# starting its system service (policy-rc.d), and run by the tests on loopback.
need=()
command -v openssl >/dev/null || need+=(openssl)
[ -x /usr/sbin/nginx ] || need+=(nginx-light)
command -v curl >/dev/null || need+=(curl)
command -v lua5.1 >/dev/null || need+=(lua5.1)
# Debian's bundle of the public roots: the trust bundle tests use it as users do.
[ -s /etc/ssl/certs/ca-certificates.crt ] || need+=(ca-certificates)
if [ ${#need[@]} -gt 0 ]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
  rm -f /usr/sbin/policy-rc.d
fi

# The real node's packages, binaries (kube-apiserver among them, all built in
# one make, once per machine) and images (tests/tests/node/ starts and stops
# the node itself).
hack/node.sh prepare
CERTSHIFT_KUBE_APISERVER="$(hack/kube-apiserver.sh)"
CERTSHIFT_CHART_RENDERED="$(pwd)/$(hack/chart.sh target/chart)"
# Helm's engine (helm-python-sdk) that chart.sh installed: the e2e tests
# install, upgrade and uninstall the chart with it.
CERTSHIFT_HELM_PYTHON="${CERTSHIFT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/certshift}/helm-venv/bin/python"
export CERTSHIFT_KUBE_APISERVER CERTSHIFT_CHART_RENDERED CERTSHIFT_HELM_PYTHON

cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
# The core micro-benchmark: ratios to floors measured in the same run, with thresholds.
cargo bench -p certshift --bench core -- --check
cargo test --workspace

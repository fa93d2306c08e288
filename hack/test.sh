#!/usr/bin/env bash
# The test command: formatting, clippy, then every test of the workspace,
# the end-to-end scenarios against a real kube-apiserver and etcd included
# (hack/kube-apiserver.sh installs etcd and builds kube-apiserver once per machine).
set -euo pipefail
cd "$(dirname "$0")/.."
. hack/common.sh

CERTSHIFT_KUBE_APISERVER="$(hack/kube-apiserver.sh)"
export CERTSHIFT_KUBE_APISERVER

cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace

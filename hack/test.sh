#!/usr/bin/env bash
# The test command: formatting, clippy, then every test of the workspace, the
# end-to-end scenarios against a real kube-apiserver and etcd included.
# hack/kube-apiserver.sh installs etcd and builds kube-apiserver once per machine;
# hack/chart.sh lints and renders the Helm chart with Helm's own engine.
set -euo pipefail
cd "$(dirname "$0")/.."
. hack/common.sh

# PKCS#12 output is checked with OpenSSL, an independent implementation.
command -v openssl >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl; }

CERTSHIFT_KUBE_APISERVER="$(hack/kube-apiserver.sh)"
CERTSHIFT_CHART_RENDERED="$(pwd)/$(hack/chart.sh target/chart)"
export CERTSHIFT_KUBE_APISERVER CERTSHIFT_CHART_RENDERED

cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
# The core micro-benchmark: ratios to floors measured in the same run, with thresholds.
cargo bench -p certshift --bench core -- --check
cargo test --workspace

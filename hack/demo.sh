#!/usr/bin/env bash
# The main job: build certshift and plan the Service Fabric conversion example,
# thumbprint -> common name, stage by stage.
set -euo pipefail
cd "$(dirname "$0")/.."
. hack/common.sh

cargo build -q -p certshift
bin=target/debug/certshift
echo "== The certificates in the store (certshift inspect)"
"$bin" inspect examples/conversion/store.yaml | grep -E "^(Source|Thumbprint|Common name|Issuer thumbprint|Not after):"
echo
echo "== The declaration by thumbprint, as in force"
"$bin" plan -o text -f examples/conversion/store.yaml -f examples/conversion/declaration-thumbprint.yaml
echo
echo "== Edited to common name with the CA pinned: the staged upgrade certshift publishes"
"$bin" plan -o text -f examples/conversion/store.yaml -f examples/conversion/declaration-common-name.yaml

#!/usr/bin/env bash
# Regenerates the example certificates and manifests in examples/conversion/.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo run -q -p certshift --example generate-examples -- examples/conversion

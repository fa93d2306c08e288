#!/usr/bin/env bash
# The test command: formatting, clippy, then every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
. hack/common.sh

cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace

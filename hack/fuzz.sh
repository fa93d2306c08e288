#!/usr/bin/env bash
# Runs each fuzz target for a number of executions (default 10^7) with
# cargo-fuzz, then minimizes the corpus that `cargo test` replays.
# Usage: hack/fuzz.sh [target...]   (RUNS=N to change the count)
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
# cargo-fuzz wants nightly flags; the stable compiler accepts them this way.
export RUSTC_BOOTSTRAP=1
runs="${RUNS:-10000000}"
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(thumbprint plan_input certificate_source revocation_list)
mkdir -p logs
for target in "${targets[@]}"; do
  work="$(mktemp -d)"
  cp corpus/"$target"/* "$work"/
  echo "== $target: $runs executions"
  start=$(date +%s)
  cargo fuzz run -s none -O "$target" "$work" -- -runs="$runs" -max_len=4096 -print_final_stats=1 \
    >"logs/$target.log" 2>&1 || { tail -40 "logs/$target.log"; exit 1; }
  grep -E "^stat::number_of_executed_units|^stat::peak_rss_mb|DONE" "logs/$target.log" | tail -3
  echo "   $(( $(date +%s) - start )) s"
  # Keep the smallest corpus with the same coverage for the replay test.
  rm -rf corpus/"$target".min && mkdir corpus/"$target".min
  cargo fuzz run -s none -O "$target" corpus/"$target".min "$work" -- -set_cover_merge=1 -max_len=4096 \
    >"logs/$target.merge.log" 2>&1
  rm -rf corpus/"$target" && mv corpus/"$target".min corpus/"$target"
  echo "   corpus: $(ls corpus/"$target" | wc -l) inputs"
  rm -rf "$work"
done

#!/usr/bin/env bash
# Fuzzing, by hand (not a test): runs each cargo-fuzz target of fuzz/ for
# SECONDS (default 60) with libFuzzer. cargo-fuzz comes from crates.io
# (`cargo install cargo-fuzz`); on a stable toolchain the sanitizer flags
# need RUSTC_BOOTSTRAP=1, set here. A crash leaves its input in
# fuzz/artifacts/<target>/: turn it into a regular test before fixing it.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds=${1:-60}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(policy_file webhook_delivery standard_webhooks token_claims)
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: cargo-fuzz is missing; install it with: cargo install cargo-fuzz" >&2
  exit 1
fi
export RUSTC_BOOTSTRAP=1
for target in "${targets[@]}"; do
  echo "== $target for ${seconds}s"
  cargo fuzz run "$target" -- -max_total_time="$seconds" -max_len=65536 2>&1 | tail -n 4
done

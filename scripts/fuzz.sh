#!/usr/bin/env bash
# Runs pachagent's fuzz targets (fuzz/fuzz_targets) with libFuzzer on the stable toolchain.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     default: 30 seconds, every target
#
# The targets are built the way cargo-fuzz builds them (SanitizerCoverage instrumentation feeding libFuzzer), minus
# AddressSanitizer, which needs a nightly compiler and adds little to code without `unsafe`. With nightly and
# cargo-fuzz installed, `cd fuzz && cargo fuzz run TARGET` works too. Each target starts from its seeds
# (fuzz/seeds/TARGET, committed) and keeps what it learns in fuzz/corpus/TARGET (not committed). A crash stops
# the run with a non-zero exit; the input that caused it is in fuzz/artifacts/TARGET/ (reproduce with
# `fuzz/target/HOST/release/TARGET fuzz/artifacts/TARGET/crash-…`).
#
# CI runs it for a few seconds per target from scripts/test.sh; a longer run before a release is worth it:
#   scripts/fuzz.sh 600
set -euo pipefail

cd "$(dirname "$0")/../fuzz"
seconds=${1:-30}
shift || true
if [ $# -gt 0 ]; then
  targets=("$@")
else
  targets=()
  for f in fuzz_targets/*.rs; do targets+=("$(basename "$f" .rs)"); done
fi

host=$(rustc -vV | sed -n 's/^host: //p')
# An explicit --target keeps these flags away from build scripts and proc macros, as cargo-fuzz does.
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing"
cargo build --release --locked --target "$host" --bins

for target in "${targets[@]}"; do
  mkdir -p "corpus/$target" "artifacts/$target" "seeds/$target"
  echo "==> fuzzing $target for ${seconds}s"
  "target/$host/release/$target" "corpus/$target" "seeds/$target" \
    -max_total_time="$seconds" -max_len=65536 -timeout=10 -rss_limit_mb=2048 \
    -artifact_prefix="artifacts/$target/" -print_final_stats=1
done

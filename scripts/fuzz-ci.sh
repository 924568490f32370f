#!/usr/bin/env bash
# Run every fuzz target for SECONDS (default 20) on its committed corpus (fuzz/corpus/), one
# after the other; fails on the first crash, leak or timeout. Needs cargo-fuzz and nightly
# (CI installs cargo-fuzz into its cache first). Crash inputs land in fuzz/artifacts/.
#   scripts/fuzz-ci.sh [SECONDS] [TARGET...]
# CARGO_TARGET_DIR (or --target-dir) keeps the sanitizer build between runs.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-20}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo +nightly fuzz list)
fi
tdir=()
if [ -n "${CARGO_TARGET_DIR:-}" ]; then tdir=(--target-dir "$CARGO_TARGET_DIR"); fi
# Release with debug assertions: overflow checks are findings too.
cargo +nightly fuzz build -O -a "${tdir[@]}"
for t in "${targets[@]}"; do
  echo "== fuzz $t for ${secs}s"
  mkdir -p "fuzz/corpus/$t"
  # The committed corpus is read, not grown: new inputs go to a scratch folder first.
  scratch=$(mktemp -d)
  log=$scratch.log
  status=0
  cargo +nightly fuzz run -O -a "${tdir[@]}" "$t" "$scratch" "fuzz/corpus/$t" -- \
    -max_total_time="$secs" -rss_limit_mb=2048 -malloc_limit_mb=1024 -timeout=10 \
    -print_final_stats=1 >"$log" 2>&1 || status=$?
  grep -E "stat::number_of_executed_units|^Done" "$log" || true
  if [ "$status" -ne 0 ]; then tail -n 40 "$log" >&2; fi
  rm -f "$log"
  rm -rf "$scratch"
  # The drivers' per-process scratch folders (/dev/shm/headcode-fuzz-<pid>) of ended runs.
  for d in /dev/shm/headcode-fuzz-*; do
    [ -e "$d" ] || continue
    kill -0 "${d##*-}" 2>/dev/null || rm -rf "$d"
  done
  if [ "$status" -ne 0 ]; then
    echo "fuzz target $t failed (exit $status); reproducer in fuzz/artifacts/$t/" >&2
    exit 1
  fi
done
echo "== all ${#targets[@]} fuzz targets ran ${secs}s without a crash"

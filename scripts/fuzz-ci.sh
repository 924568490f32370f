#!/usr/bin/env bash
# Run every fuzz target for SECONDS (default 20) on its committed corpus (fuzz/corpus/); fails
# on the first crash, leak or timeout, printing the tail of its log. Crash inputs land in
# fuzz/artifacts/<target>/.
#   scripts/fuzz-ci.sh [SECONDS] [TARGET...]
# Environment:
#   CARGO_FUZZ       the cargo-fuzz binary (default: `cargo-fuzz` on PATH); run on nightly
#   FUZZ_SANITIZER   address (default, as the long local runs) or none (CI: a build without
#                    AddressSanitizer compiles faster; overflow checks stay on)
#   FUZZ_JOBS        targets fuzzed at once (default 1; CI uses one per core)
#   CARGO_TARGET_DIR keeps the instrumented build between runs
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-20}
shift || true
targets=("$@")
fuzz=${CARGO_FUZZ:-cargo-fuzz}
sanitizer=${FUZZ_SANITIZER:-address}
jobs=${FUZZ_JOBS:-1}
export RUSTUP_TOOLCHAIN=nightly
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <("$fuzz" fuzz list)
fi
tdir=()
if [ -n "${CARGO_TARGET_DIR:-}" ]; then tdir=(--target-dir "$CARGO_TARGET_DIR"); fi
# Release with debug assertions: overflow checks are findings too.
build=(-O -a -s "$sanitizer" "${tdir[@]}")
"$fuzz" fuzz build "${build[@]}"

logs=$(mktemp -d)
one() {
  local t=$1 scratch status=0
  mkdir -p "fuzz/corpus/$t"
  # The committed corpus is read, not grown: new inputs go to a scratch folder first.
  scratch=$(mktemp -d)
  "$fuzz" fuzz run "${build[@]}" "$t" "$scratch" "fuzz/corpus/$t" -- \
    -max_total_time="$secs" -rss_limit_mb=2048 -malloc_limit_mb=1024 -timeout=10 \
    -print_final_stats=1 >"$logs/$t" 2>&1 || status=$?
  rm -rf "$scratch"
  echo "$status" >"$logs/$t.rc"
}
running=0
for t in "${targets[@]}"; do
  one "$t" &
  running=$((running + 1))
  if [ "$running" -ge "$jobs" ]; then
    wait -n || true
    running=$((running - 1))
  fi
done
wait
# The drivers' per-process scratch folders (/dev/shm/headcode-fuzz-<pid>) of ended runs.
for d in /dev/shm/headcode-fuzz-*; do
  [ -e "$d" ] || continue
  kill -0 "${d##*-}" 2>/dev/null || rm -rf "$d"
done
failed=0
for t in "${targets[@]}"; do
  execs=$(grep -o "stat::number_of_executed_units: *[0-9]*" "$logs/$t" | grep -o "[0-9]*$" || echo "?")
  rc=$(cat "$logs/$t.rc")
  echo "== $t: ${secs}s, $execs executions, exit $rc"
  if [ "$rc" -ne 0 ]; then
    tail -n 40 "$logs/$t" >&2
    echo "fuzz target $t failed (exit $rc); reproducer in fuzz/artifacts/$t/" >&2
    failed=1
  fi
done
rm -rf "$logs"
[ "$failed" -eq 0 ] || exit 1
echo "== all ${#targets[@]} fuzz targets ran ${secs}s without a crash"

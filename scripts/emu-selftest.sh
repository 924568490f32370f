#!/usr/bin/env bash
# The CUDA path's self-test with no GPU, under headcode-emu (emu/): a stand-in
# libcuda/libcublas that executes kernels/*.cu and candle's f32/f64/integer kernels compiled
# as C++, one fiber per CUDA thread. Checks every kernel and the launch code in
# src/gpu/cuda/ (argument lists, grids, shared-memory opt-ins, CUDA-graph capture and
# replay, the cuBLAS operand mapping) against the CPU references, and `discover --device
# cuda` end to end against the CPU (4 IOI pairs, 20 steps: the emulation is slow), as
# `headcode selftest --device cuda` does on a GPU. It cannot check speed or what only real
# hardware does (memory ordering between blocks, GPU rounding).
#
# Steps: build the emulated libraries (plain, and with AddressSanitizer); install nvcc (PyPI
# wheels, cached) because the `cuda` build compiles the kernels to PTX; build `headcode
# --features cuda` linked against the emulated libraries; then
#   1. the whole quick self-test on the plain build (6 min on 2 cores here), then a smoke
#      run of `bench --device cuda` (tiny fixture model, 20 SAE steps);
#   2. the kernel checks under five thread schedules (emu/runtime.cpp): lockstep forward and
#      reverse, each warp alone to its next barrier in ascending and descending order, and a
#      seeded random one. Every value the host reads back (HEADCODE_EMU_DIGEST) must be
#      bit-identical across them: a result that depends on the order of threads, warps or
#      blocks is a race, which the forward order alone can hide (16 s a schedule here);
#   3. the kernel checks again under AddressSanitizer, so a kernel that reads or writes
#      outside a buffer (device or shared memory) stops with a report (the end-to-end
#      check is left out there: ASan makes it take over 20 min).
# EMU_SCHEDULES=0 skips step 2, EMU_ASAN=0 step 3. Extra arguments go to every self-test run.
# Exit status: non-zero if a self-test fails or a schedule changes a result.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
cache=${HEADCODE_CI_CACHE:-$HOME/.cache/headcode}
emu=$cache/emu
emu_asan=$cache/emu-asan
EMU_ASAN=0 EMU_OUT=$emu "$root/emu/build.sh" >/dev/null
echo "headcode-emu built in $emu (runtime self-test: $(grep -c '^ok' "$emu/test_runtime.log") ok)"
if [ "${EMU_ASAN:-1}" = 1 ]; then
    EMU_ASAN=1 EMU_OUT=$emu_asan "$root/emu/build.sh" >/dev/null
    echo "headcode-emu with AddressSanitizer built in $emu_asan"
fi

NVCC_ONLY=1 CUDA_TOOLCHAIN_DIR=$cache/cuda-13.0-toolchain "$root/scripts/setup-cuda-toolchain.sh" >/dev/null
# CI passes its test target dir, whose debug dependencies this build reuses.
target=${CARGO_TARGET_DIR:-$cache/ci-target-emu}
# The link finds the emulated libraries through LIBRARY_PATH (not RUSTFLAGS, which would
# tie the build cache to this path).
CUDA_HOME=$cache/cuda-13.0-toolchain/cuda CUDA_COMPUTE_CAP=90 CUDAFORGE_THREADS=2 \
    CARGO_TARGET_DIR=$target LIBRARY_PATH="$emu${LIBRARY_PATH:+:$LIBRARY_PATH}" \
    cargo build --features cuda --bin headcode
bin=$target/debug/headcode

echo "== selftest under headcode-emu (kernels, then discover end to end vs the CPU)"
LD_LIBRARY_PATH="$emu" "$bin" selftest --device cuda --quick --e2e-pairs 4 --e2e-steps 20 "$@"
# The GPU bench's code path (every stage, the hardware floors, the forward + hooks
# section), on the tiny GPT-2 fixture with 20 SAE steps and 16 prompts; the timings mean
# nothing here.
echo "== bench --device cuda under headcode-emu (smoke run: tiny fixture model, 20 SAE steps, 16 prompts)"
bench_json=$(mktemp)
LD_LIBRARY_PATH="$emu" "$bin" bench --device cuda --model tests/fixtures/gpt2_tiny --reps 1 \
    --steps 20 --prompts 16 --json "$bench_json"
for key in '"floors"' '"sae_per_head_z_untiled"' '"forward_hooks_candle_cuda"' '"tf32_parity_z"' '"gemm_grad_w_enc"' '"adam_w_dec"' '"phase_clocks"' '"W_enc rows + b_enc + next xc"' '"W_enc + W_dec rows + b_enc"'; do
    grep -q "$key" "$bench_json" || { echo "bench JSON lacks $key" >&2; exit 1; }
done
if grep -q '"error": "' "$bench_json"; then
    echo "bench JSON records an error:" >&2
    grep '"error": "' "$bench_json" >&2
    exit 1
fi
rm -f "$bench_json"
# Every model family (GPT-2, Llama, attn-only, Qwen2, Gemma 2/3, Pythia) on candle's CUDA
# path against the CPU: forward, per-head hooks and the ACDC/EAP graph.
echo "== tests/cuda_families.rs under headcode-emu"
families=$(CUDA_HOME=$cache/cuda-13.0-toolchain/cuda CUDA_COMPUTE_CAP=90 CUDAFORGE_THREADS=2 \
    CARGO_TARGET_DIR=$target LIBRARY_PATH="$emu${LIBRARY_PATH:+:$LIBRARY_PATH}" \
    cargo test --features cuda --test cuda_families --no-run --message-format=json \
    | grep -o '"executable":"[^"]*cuda_families[^"]*"' | cut -d'"' -f4)
[ -x "$families" ] || { echo "tests/cuda_families.rs did not build" >&2; exit 1; }
LD_LIBRARY_PATH="$emu" "$families" --nocapture
if [ "${EMU_SCHEDULES:-1}" = 1 ]; then
    echo "== kernel checks under five schedules; what the host reads back must not change"
    digests=$(mktemp -d)
    for sched in forward reverse warps warps-reverse random:1; do
        log=$digests/${sched/:/-}
        # HEADCODE_EMU_CLOCK=count: the trainers' phase clocks count instead of telling the
        # time, so their records are read-backs like any other
        if ! HEADCODE_EMU_CLOCK=count HEADCODE_EMU_SCHEDULE=$sched HEADCODE_EMU_DIGEST=$log.digest LD_LIBRARY_PATH="$emu" \
            "$bin" selftest --device cuda --quick --kernels-only "$@" >"$log.out" 2>&1; then
            cat "$log.out" >&2
            echo "selftest FAILED under schedule $sched" >&2
            exit 1
        fi
        if ! cmp -s "$digests/forward.digest" "$log.digest"; then
            echo "schedule $sched changes what the host reads back (a race); first difference" \
                "(copy number, bytes, hash, last kernel launched):" >&2
            diff "$digests/forward.digest" "$log.digest" | head -4 >&2
            exit 1
        fi
        echo "schedule $sched: $(grep -m1 '^selftest:' "$log.out"), $(wc -l <"$log.digest") read-backs identical to forward"
    done
    rm -rf "$digests"
fi
if [ "${EMU_ASAN:-1}" = 1 ]; then
    echo "== kernel checks under headcode-emu with AddressSanitizer"
    LD_LIBRARY_PATH="$emu_asan" LD_PRELOAD="$(${CXX:-g++} -print-file-name=libasan.so)" \
        ASAN_OPTIONS=detect_leaks=0 "$bin" selftest --device cuda --quick --kernels-only "$@"
fi

#!/usr/bin/env bash
# The CUDA path's self-test with no GPU, under headcode-emu (emu/): a stand-in
# libcuda/libcublas that executes kernels/*.cu and candle's f32/f64/integer kernels compiled
# as C++, one fiber per CUDA thread. Checks every kernel and the launch code in
# src/gpu/cuda.rs (argument lists, grids, shared-memory opt-ins, CUDA-graph capture and
# replay, the cuBLAS operand mapping) against the CPU references, and `discover --device
# cuda` end to end against the CPU (4 IOI pairs, 20 steps: the emulation is slow), as
# `headcode selftest --device cuda` does on a GPU. It cannot check speed or what only real
# hardware does (memory ordering between blocks, GPU rounding).
#
# Steps: build the emulated libraries; install nvcc (PyPI wheels, cached) because the
# `cuda` build compiles the kernels to PTX; build `headcode --features cuda` linked against
# the emulated libraries; run the self-test with them on the library path.
# EMU_ASAN=1 (the default) builds the emulation with AddressSanitizer, so a kernel that reads
# or writes outside a buffer (device or shared memory) stops with a report.
# Exit status: the self-test's.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
cache=${HEADCODE_CI_CACHE:-$HOME/.cache/headcode}
export EMU_ASAN=${EMU_ASAN:-1}
# The link finds the emulated libraries through LIBRARY_PATH (not RUSTFLAGS, which would
# tie the build cache to this path).
emu=$cache/emu
EMU_OUT=$emu "$root/emu/build.sh" >/dev/null
echo "headcode-emu built in $emu (runtime self-test: $(grep -c '^ok' "$emu/test_runtime.log") ok)"

NVCC_ONLY=1 CUDA_TOOLCHAIN_DIR=$cache/cuda-13.0-toolchain "$root/scripts/setup-cuda-toolchain.sh" >/dev/null
target=$cache/ci-target-emu
CUDA_HOME=$cache/cuda-13.0-toolchain/cuda CUDA_COMPUTE_CAP=90 CUDAFORGE_THREADS=2 \
    CARGO_TARGET_DIR=$target LIBRARY_PATH="$emu${LIBRARY_PATH:+:$LIBRARY_PATH}" \
    cargo build --features cuda --bin headcode

run=(env LD_LIBRARY_PATH="$emu")
if [ "$EMU_ASAN" = 1 ]; then
    run+=(LD_PRELOAD="$(${CXX:-g++} -print-file-name=libasan.so)" ASAN_OPTIONS=detect_leaks=0)
fi
"${run[@]}" "$target/debug/headcode" selftest --device cuda --quick --e2e-pairs 4 --e2e-steps 20 "$@"

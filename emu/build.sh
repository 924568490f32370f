#!/usr/bin/env bash
# Build headcode-emu: fake CUDA libraries that run headcode's own kernels (kernels/*.cu,
# compiled as C++ against emu/include) on the CPU. Output in $EMU_OUT (default target/emu):
#   libcuda.so.1     driver API + fiber runtime + every kernel of kernels/*.cu
#   libcublas.so.13  cublasGemmStridedBatchedEx (FP32, TF32 rounding) and the handle calls
#   libcudart.so.13, libcurand.so.10  the start-up symbols candle's CUDA build references
# plus unversioned names (libcuda.so, ...) so a `--features cuda` build can link against
# them where no CUDA libraries are installed. Needs g++ and perl. EMU_ASAN=1 builds with
# AddressSanitizer (run the binary with LD_PRELOAD of libasan, as scripts/emu-selftest.sh does).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
out=${EMU_OUT:-$root/target/emu}
mkdir -p "$out/gen"
CXX=${CXX:-g++}
flags=(-std=c++17 -O2 -g -fPIC -Wall -Wno-unknown-pragmas -I"$here/include" -I"$here")
if [ "${EMU_ASAN:-0}" = 1 ]; then
    flags+=(-fsanitize=address -fno-omit-frame-pointer)
fi

# Each kernel file as C++: `extern __shared__ T x[];` becomes the launch's dynamic shared
# buffer, and every `extern "C" __global__` kernel is registered by name with its
# __launch_bounds__ (the launch checks it, as the GPU does).
gens=()
for cu in "$root"/kernels/*.cu; do
    name=$(basename "$cu" .cu)
    gen=$out/gen/$name.cpp
    {
        echo '#include "emu.h"'
        echo "#line 1 \"$cu\""
        perl -0777 -pe 's/extern\s+__shared__\s+([\w ]+?)\s+(\w+)\s*\[\s*\]\s*;/$1 *$2 = static_cast<$1 *>(emu::dyn_smem());/g' "$cu"
        echo
        perl -0777 -ne 'while (/extern\s+"C"\s+__global__\s+void\s+(?:__launch_bounds__\((\d+)[^)]*\)\s*)?(\w+)\s*\(/g) { print "EMU_REGISTER($2, ", ($1 // 0), ");\n" }' "$cu"
    } >"$gen"
    gens+=("$gen")
done

pids=()
"$CXX" "${flags[@]}" -shared -Wl,-soname,libcuda.so.1 -o "$out/libcuda.so.1" \
    "$here/runtime.cpp" "$here/driver.cpp" "${gens[@]}" &
pids+=($!)
ver() { printf '%s { global: %s; local: *; };\n' "$1" "$2" >"$out/$1.map"; }
ver libcudart.so.13 '__cuda*; cuda*'
ver libcurand.so.10 'curand*'
"$CXX" "${flags[@]}" -shared -Wl,-soname,libcudart.so.13 \
    -Wl,--version-script,"$out/libcudart.so.13.map" -o "$out/libcudart.so.13" "$here/cudart.cpp" &
pids+=($!)
"$CXX" "${flags[@]}" -shared -Wl,-soname,libcurand.so.10 \
    -Wl,--version-script,"$out/libcurand.so.10.map" -o "$out/libcurand.so.10" "$here/curand.cpp" &
pids+=($!)
for p in "${pids[@]}"; do wait "$p"; done
ver libcublas.so.13 'cublas*'
"$CXX" "${flags[@]}" -shared -Wl,-soname,libcublas.so.13 \
    -Wl,--version-script,"$out/libcublas.so.13.map" -o "$out/libcublas.so.13" \
    "$here/cublas.cpp" -L"$out" -l:libcuda.so.1 -Wl,-rpath,'$ORIGIN'
# Empty stand-ins for libraries the build links with --as-needed but never calls, so the
# link finds them where only nvcc is installed.
echo >"$out/empty.c"
for l in libnvrtc.so.13 libcublasLt.so.13; do
    "$CXX" -shared -fPIC -Wl,-soname,"$l" -o "$out/$l" -x c "$out/empty.c"
done
for l in libcuda.so.1 libcublas.so.13 libcudart.so.13 libcurand.so.10 libnvrtc.so.13 libcublasLt.so.13; do
    ln -sf "$l" "$out/${l%.so.*}.so"
done
# Test the runtime itself (barriers, shuffles, and the faults it must report).
"$CXX" "${flags[@]}" -o "$out/test_runtime" "$here/test_runtime.cpp" "$here/runtime.cpp"
if [ "${EMU_ASAN:-0}" = 1 ]; then
    ASAN_OPTIONS=detect_leaks=0 "$out/test_runtime" >"$out/test_runtime.log"
else
    "$out/test_runtime" >"$out/test_runtime.log"
fi || { cat "$out/test_runtime.log" >&2; echo "emu runtime test FAILED" >&2; exit 1; }
echo "$out"

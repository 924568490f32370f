#!/usr/bin/env bash
# Build headcode-emu: stand-in CUDA libraries that run CUDA kernels on the CPU (kernels/*.cu
# and candle's f32/f64/integer kernels, compiled as C++ against emu/include). Output in
# $EMU_OUT (default target/emu):
#   libcuda.so.1     driver API + fiber runtime + the kernels
#   libcublas.so.13  cublasGemmStridedBatchedEx (FP32, TF32 rounding) and the handle calls
#   libcudart.so.13, libcurand.so.10  the start-up symbols candle's CUDA build references
#   libnvrtc.so.13, libcublasLt.so.13  empty, for the link only
# plus unversioned names (libcuda.so, ...) so a `--features cuda` build links where no CUDA
# libraries are installed. Needs g++ and perl. EMU_ASAN=1 builds with AddressSanitizer
# (run the binary with LD_PRELOAD of libasan, as scripts/emu-selftest.sh does).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
out=${EMU_OUT:-$root/target/emu}
mkdir -p "$out/gen"
CXX=${CXX:-g++}
# initial-exec TLS: the per-fiber state and the static __shared__ arrays are thread_local,
# and these libraries are loaded at start-up (NEEDED), so no __tls_get_addr call per access.
flags=(-std=c++17 -O2 -g -fPIC -ftls-model=initial-exec -Wall -Wno-unknown-pragmas
    -Wno-attributes -I"$here/include" -I"$here")
if [ "${EMU_ASAN:-0}" = 1 ]; then
    flags+=(-fsanitize=address -fno-omit-frame-pointer)
fi
# Kernels call fmaf in their inner loops: without FMA instructions each is a libm call.
if grep -qw fma /proc/cpuinfo 2>/dev/null; then
    flags+=(-mfma)
fi

# Each kernel source as C++: `extern __shared__ T x[];` becomes the launch's dynamic
# shared buffer, and every `extern "C" __global__` kernel, found in the preprocessed source
# (so macro-generated kernels count), is registered by name with its __launch_bounds__
# (the launch checks it, as the GPU does).
# candle's kernels (candle-kernels, the version Cargo.lock pins) are compiled too, with
# __CUDA_ARCH__ 520 so that only their f32/f64/integer kernels exist; without them the
# candle CUDA ops (the model forward) cannot run here.
candle_ver=$(awk '/^name = "candle-kernels"/ {getline; gsub(/[^0-9.]/, ""); print; exit}' "$root/Cargo.lock")
candle_src=${CANDLE_KERNELS_SRC:-$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/candle-kernels-"$candle_ver"/src 2>/dev/null | head -1)}
candle_flags=(-D__CUDA_ARCH__=520 -D__CUDACC_VER_MAJOR__=13 -D__CUDACC_VER_MINOR__=0
    -I"$candle_src" -Wno-unused-function -Wno-unused-variable -Wno-sign-compare
    -Wno-unused-but-set-variable -Wno-maybe-uninitialized -Wno-narrowing)
gen_one() { # source, generated .cpp, extra flags...
    local cu=$1 gen=$2
    shift 2
    local body=${gen%.cpp}.cu.cpp
    perl -0777 -pe 's/extern\s+__shared__\s+([\w ]+?)\s+(\w+)\s*\[\s*\]\s*;/$1 *$2 = static_cast<$1 *>(emu::dyn_smem());/g' "$cu" >"$body"
    {
        echo '#include "emu.h"'
        echo "#line 1 \"$cu\""
        cat "$body"
        echo
        "$CXX" "${flags[@]}" "$@" -E -P -x c++ -include emu.h "$body" |
            perl -0777 -ne 'while (/extern\s+"C"\s+__attribute__\(\(emu_global\)\)\s+void\s+(?:__attribute__\(\(emu_bounds\((\d+)\)\)\)\s*)?(\w+)\s*\(/g) { print "EMU_REGISTER($2, ", ($1 // 0), ");\n" }'
    } >"$gen"
    rm -f "$body"
}
objs=()
compile_pids=()
for cu in "$root"/kernels/*.cu; do
    gen=$out/gen/$(basename "$cu" .cu).cpp
    gen_one "$cu" "$gen"
    objs+=("${gen%.cpp}.o")
    # -Werror on our own kernels: g++ sees what nvcc lets pass (an infinite recursion a
    # refactor once left in sae.cu compiled with nvcc and only warned here).
    "$CXX" "${flags[@]}" -Werror -c -o "${gen%.cpp}.o" "$gen" &
    compile_pids+=($!)
done
if [ -n "$candle_src" ] && [ -d "$candle_src" ]; then
    for k in affine binary cast fill indexing reduce ternary unary; do
        gen=$out/gen/candle_$k.cpp
        gen_one "$candle_src/$k.cu" "$gen" "${candle_flags[@]}"
        objs+=("${gen%.cpp}.o")
        "$CXX" "${flags[@]}" "${candle_flags[@]}" -c -o "${gen%.cpp}.o" "$gen" &
        compile_pids+=($!)
        # two compilers at a time
        if [ ${#compile_pids[@]} -ge 2 ]; then wait "${compile_pids[0]}"; compile_pids=("${compile_pids[@]:1}"); fi
    done
else
    echo "headcode-emu: candle-kernels $candle_ver sources not found (set CANDLE_KERNELS_SRC); candle's CUDA ops will not run" >&2
fi
for p in "${compile_pids[@]}"; do wait "$p"; done

pids=()
# candle's headers define the same non-inline helpers in every kernel file (each is its
# own PTX module on a GPU); the copies are identical, so the link keeps one.
"$CXX" "${flags[@]}" -shared -Wl,-soname,libcuda.so.1 -Wl,--allow-multiple-definition \
    -o "$out/libcuda.so.1" "$here/runtime.cpp" "$here/driver.cpp" "${objs[@]}" &
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
    "$here/cublas.cpp" -ldl
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

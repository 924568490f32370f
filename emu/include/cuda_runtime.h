// headcode-emu: the device-side half of the CPU emulation of our CUDA kernels.
//
// kernels/*.cu are compiled as C++ by g++ with this folder first on the include path, so
// `#include <cuda_runtime.h>` lands here. Every CUDA thread of a block runs as a fiber on one
// OS thread (emu/runtime.cpp); `__syncthreads` and the warp shuffles switch fibers, so the
// kernels run unchanged, block after block. Static `__shared__` arrays become per-OS-thread
// statics (one block runs at a time); `extern __shared__` arrays are rewritten by
// emu/build.sh into the launch's dynamic shared buffer.
#pragma once
#include <cassert>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

// Kept as (ignored) attributes so emu/build.sh finds every kernel, and its launch bounds,
// in the preprocessed source, macro-generated ones included.
#define __global__ __attribute__((emu_global))
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __restrict__ __restrict
#define __launch_bounds__(n, ...) __attribute__((emu_bounds(n)))
#define __shared__ static thread_local
#define __align__(n) alignas(n)

struct uint3 {
    unsigned x, y, z;
};
struct dim3 {
    unsigned x = 1, y = 1, z = 1;
};

namespace emu {
// The running fiber's thread index, and the block's launch geometry (runtime.cpp).
const uint3 &thread_idx();
const uint3 &block_idx();
const dim3 &block_dim();
const dim3 &grid_dim();
void *dyn_smem();
void sync_threads();
// Warp exchange: every live lane of the warp posts `bits` and names the lane it reads.
std::uint64_t shuffle(std::uint64_t bits, unsigned src_lane);
unsigned lane_id();

template <class T>
inline std::uint64_t to_bits(T v) {
    static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value, "shuffle type");
    std::uint64_t b = 0;
    std::memcpy(&b, &v, sizeof(T));
    return b;
}
template <class T>
inline T from_bits(std::uint64_t b) {
    T v;
    std::memcpy(&v, &b, sizeof(T));
    return v;
}
}  // namespace emu

#define threadIdx (emu::thread_idx())
#define blockIdx (emu::block_idx())
#define blockDim (emu::block_dim())
#define gridDim (emu::grid_dim())

inline void __syncthreads() { emu::sync_threads(); }

// Shuffles with the full-warp width of 32 (the only width our kernels use).
template <class T>
inline T __shfl_xor_sync(unsigned /*mask*/, T v, int lane_mask, int width = 32) {
    (void)width;
    return emu::from_bits<T>(emu::shuffle(emu::to_bits(v), emu::lane_id() ^ (unsigned)lane_mask));
}
template <class T>
inline T __shfl_down_sync(unsigned /*mask*/, T v, unsigned delta, int width = 32) {
    (void)width;
    const unsigned src = emu::lane_id() + delta;
    return emu::from_bits<T>(emu::shuffle(emu::to_bits(v), src < 32u ? src : emu::lane_id()));
}
template <class T>
inline T __shfl_sync(unsigned /*mask*/, T v, int src_lane, int width = 32) {
    (void)width;
    return emu::from_bits<T>(emu::shuffle(emu::to_bits(v), (unsigned)src_lane & 31u));
}

// One block runs at a time on one OS thread, and a fiber is switched only at a barrier or a
// shuffle: every write is seen by every later read, so a fence has nothing to order.
inline void __threadfence() {}

// One block runs at a time on one OS thread, so plain read-modify-writes are atomic here.
template <class T, class U>
inline T atomicAdd(T *p, U v) {
    T old = *p;
    *p = old + (T)v;
    return old;
}
template <class T, class U>
inline T atomicOr(T *p, U v) {
    T old = *p;
    *p = old | (T)v;
    return old;
}
template <class T, class U>
inline T atomicMax(T *p, U v) {
    T old = *p;
    *p = old < (T)v ? (T)v : old;
    return old;
}

// Clocks for the trainers' phase-clock twins (sae.cu). clock64 counts nanoseconds of the
// host's steady clock, which only increases, like the SM's cycle counter; under
// HEADCODE_EMU_CLOCK=count it counts reads within the block instead (emu::clock_now), so
// read-backs stay comparable across schedules. There is one "SM" here (blocks run one after
// another), and %smid / %globaltimer, which sae.cu reads with inline PTX on a GPU, come
// from these when HEADCODE_EMU is defined.
#define HEADCODE_EMU 1
namespace emu {
long long clock_now();
}
inline long long clock64() { return emu::clock_now(); }
inline unsigned long long emu_global_ns() { return (unsigned long long)emu::clock_now(); }
inline unsigned emu_sm_id() { return 0; }

inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz((unsigned)x); }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline unsigned __float_as_uint(float f) { return emu::from_bits<unsigned>(emu::to_bits(f)); }
inline float __uint_as_float(unsigned u) { return emu::from_bits<float>(emu::to_bits(u)); }

template <class A, class B>
inline typename std::common_type<A, B>::type min(A a, B b) {
    return b < a ? b : a;
}
template <class A, class B>
inline typename std::common_type<A, B>::type max(A a, B b) {
    return a < b ? b : a;
}
using std::isnan;
using std::isinf;

// CUDA's vector types and the bit casts and atomics candle's kernels use.
struct float2 {
    float x, y;
};
struct float4 {
    float x, y, z, w;
};
inline float2 make_float2(float x, float y) { return float2{x, y}; }
inline float4 make_float4(float x, float y, float z, float w) { return float4{x, y, z, w}; }
inline int __float_as_int(float f) { return emu::from_bits<int>(emu::to_bits(f)); }
inline float __int_as_float(int i) { return emu::from_bits<float>(emu::to_bits(i)); }
inline long long __double_as_longlong(double d) { return emu::from_bits<long long>(emu::to_bits(d)); }
inline double __longlong_as_double(long long i) { return emu::from_bits<double>(emu::to_bits(i)); }
template <class T, class C, class V>
inline T atomicCAS(T *p, C compare, V v) {
    T old = *p;
    if (old == (T)compare) *p = (T)v;
    return old;
}
template <class T, class U>
inline T atomicMin(T *p, U v) {
    T old = *p;
    *p = (T)v < old ? (T)v : old;
    return old;
}
template <class T>
inline T __ldg(const T *p) {
    return *p;
}
inline float normcdff(float x) { return 0.5f * std::erfc(-x * 0.70710678118654752f); }
inline double normcdf(double x) { return 0.5 * std::erfc(-x * 0.70710678118654752440); }
inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
using std::signbit;
constexpr int warpSize = 32;

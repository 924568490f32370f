// headcode-emu: the 16- and 8-bit float types candle's kernel sources name outside their
// architecture guards. The emulation compiles candle's kernels with __CUDA_ARCH__ 520, so
// no f16/bf16/f8 kernel is instantiated; these types only have to exist and convert.
// Storage is the IEEE / bfloat16 / e4m3 bit pattern; arithmetic goes through float.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

namespace emu {
inline std::uint32_t f2u(float f) {
    std::uint32_t u;
    std::memcpy(&u, &f, 4);
    return u;
}
inline float u2f(std::uint32_t u) {
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}
}  // namespace emu

struct __half_raw {
    unsigned short x;
};
struct __half {
    unsigned short x;
    __half() = default;
    __half(__half_raw r) : x(r.x) {}
    __half(float f) {
        const _Float16 h = (_Float16)f;
        std::memcpy(&x, &h, 2);
    }
    operator float() const {
        _Float16 h;
        std::memcpy(&h, &x, 2);
        return (float)h;
    }
};
struct __half2 {
    __half x, y;
};
struct __nv_bfloat16 {
    unsigned short x;
    __nv_bfloat16() = default;
    __nv_bfloat16(float f) {
        std::uint32_t u = emu::f2u(f);
        u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest even
        x = (unsigned short)(u >> 16);
    }
    operator float() const { return emu::u2f((std::uint32_t)x << 16); }
};
struct __nv_bfloat162 {
    __nv_bfloat16 x, y;
};
struct __nv_fp8_e4m3 {
    unsigned char __x;
    __nv_fp8_e4m3() = default;
    explicit __nv_fp8_e4m3(float) : __x(0) {}
    operator float() const { return 0.f; }
};
typedef unsigned short __half_raw_t;
typedef unsigned char __nv_fp8_storage_t;
enum __nv_fp8_interpretation_t { __NV_E4M3, __NV_E5M2 };
// Only the f8 kernels (never instantiated here, see above) convert.
inline __half_raw __nv_cvt_fp8_to_halfraw(__nv_fp8_storage_t, __nv_fp8_interpretation_t) {
    return __half_raw{0};
}

inline __half __float2half(float f) { return __half(f); }
inline float __half2float(__half h) { return (float)h; }
inline unsigned short __half_as_ushort(__half h) { return h.x; }
inline __half __ushort_as_half(unsigned short u) {
    __half h;
    h.x = u;
    return h;
}
inline bool __hisnan(__half h) { return std::isnan((float)h); }
inline __half __hmax(__half a, __half b) { return (float)a < (float)b ? b : a; }
inline __half __hmin(__half a, __half b) { return (float)b < (float)a ? b : a; }
inline __half __hmax_nan(__half a, __half b) { return __hisnan(a) ? a : (__hisnan(b) ? b : __hmax(a, b)); }
inline __half __hmin_nan(__half a, __half b) { return __hisnan(a) ? a : (__hisnan(b) ? b : __hmin(a, b)); }
inline __half __habs(__half h) { return __half(std::fabs((float)h)); }
inline __half __low2half(__half2 h) { return h.x; }
inline __half __high2half(__half2 h) { return h.y; }
inline float __low2float(__half2 h) { return (float)h.x; }
inline float __high2float(__half2 h) { return (float)h.y; }
inline __nv_bfloat16 __float2bfloat16(float f) { return __nv_bfloat16(f); }
inline __nv_bfloat16 __float2bfloat16_rn(float f) { return __nv_bfloat16(f); }
inline float __bfloat162float(__nv_bfloat16 b) { return (float)b; }

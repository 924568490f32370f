// headcode-emu: the cuBLAS calls a headcode `--features cuda` binary makes (libcublas.so.13),
// on the CPU. cublasGemmStridedBatchedEx is real: column-major, FP32 in and out, argument
// checks as cuBLAS documents them; CUBLAS_COMPUTE_32F_FAST_TF32 rounds A and B to TF32
// (10-bit mantissa) before the f32 products, as tensor cores do. The rest fail with
// CUBLAS_STATUS_NOT_SUPPORTED.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "emu.h"

namespace {
typedef int Status;
constexpr Status OK = 0, INVALID_VALUE = 7, NOT_SUPPORTED = 15, NOT_INITIALIZED = 1;
constexpr int R_32F = 0, COMPUTE_32F = 68, COMPUTE_32F_PEDANTIC = 69, COMPUTE_32F_TF32 = 77;

struct Handle {
    void *stream = nullptr;
};

float tf32(float x) {
    std::uint32_t u;
    std::memcpy(&u, &x, 4);
    if ((u & 0x7f800000u) != 0x7f800000u) {  // finite: round to nearest, ties away
        u += 0x1000u;
        u &= 0xffffe000u;
    }
    std::memcpy(&x, &u, 4);
    return x;
}
}  // namespace

extern "C" {

Status cublasCreate_v2(void **h) {
    if (!h) return INVALID_VALUE;
    *h = new Handle();
    return OK;
}
Status cublasDestroy_v2(void *h) {
    delete static_cast<Handle *>(h);
    return OK;
}
Status cublasSetStream_v2(void *h, void *s) {
    if (!h) return NOT_INITIALIZED;
    static_cast<Handle *>(h)->stream = s;
    return OK;
}

Status cublasGemmStridedBatchedEx(void *h, int ta, int tb, int m, int n, int k, const void *alpha,
                                  const void *A, int at, int lda, long long sa, const void *B,
                                  int bt, int ldb, long long sb, const void *beta, void *C, int ct,
                                  int ldc, long long sc, int batch, int compute, int /*algo*/) {
    if (!h) return NOT_INITIALIZED;
    if (at != R_32F || bt != R_32F || ct != R_32F) return NOT_SUPPORTED;
    if (compute != COMPUTE_32F && compute != COMPUTE_32F_PEDANTIC && compute != COMPUTE_32F_TF32)
        return NOT_SUPPORTED;
    if ((ta != 0 && ta != 1) || (tb != 0 && tb != 1)) return NOT_SUPPORTED;
    const int a_rows = ta == 0 ? m : k, b_rows = tb == 0 ? k : n;
    if (m < 0 || n < 0 || k < 0 || batch < 0 || lda < std::max(1, a_rows) ||
        ldb < std::max(1, b_rows) || ldc < std::max(1, m))
        return INVALID_VALUE;
    if (!alpha || !beta) return INVALID_VALUE;
    // Host pointer mode (cuBLAS's default): the scalars are read now.
    const float al = *static_cast<const float *>(alpha), be = *static_cast<const float *>(beta);
    const float *a = static_cast<const float *>(A), *b = static_cast<const float *>(B);
    float *c = static_cast<float *>(C);
    const bool round = compute == COMPUTE_32F_TF32;
    const int r = emu::enqueue(static_cast<Handle *>(h)->stream, [=] {
        for (int s = 0; s < batch; ++s) {
            const float *as = a + s * sa, *bs = b + s * sb;
            float *cs = c + s * sc;
            for (int j = 0; j < n; ++j)
                for (int i = 0; i < m; ++i) {
                    float acc = 0.f;
                    for (int p = 0; p < k; ++p) {
                        float x = ta == 0 ? as[i + (long long)p * lda] : as[p + (long long)i * lda];
                        float y = tb == 0 ? bs[p + (long long)j * ldb] : bs[j + (long long)p * ldb];
                        if (round) {
                            x = tf32(x);
                            y = tf32(y);
                        }
                        acc = std::fma(x, y, acc);
                    }
                    float &out = cs[i + (long long)j * ldc];
                    out = be == 0.f ? al * acc : al * acc + be * out;  // beta 0: C is not read
                }
        }
        return 0;
    });
    return r == 0 ? OK : INVALID_VALUE;
}

Status cublasDgemmStridedBatched(void *, int, int, int, int, int, const double *, const double *,
                                 int, long long, const double *, int, long long, const double *,
                                 double *, int, long long, int) {
    return NOT_SUPPORTED;
}

}  // extern "C"

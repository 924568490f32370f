// headcode-emu: the cuBLAS calls a headcode `--features cuda` binary makes (libcublas.so.13),
// on the CPU. cublasGemmStridedBatchedEx is real: column-major, FP32 in and out, argument
// checks as cuBLAS documents them; CUBLAS_COMPUTE_32F_FAST_TF32 rounds A and B to TF32
// (10-bit mantissa) before the f32 products, as tensor cores do. The rest fail with
// CUBLAS_STATUS_NOT_SUPPORTED.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <dlfcn.h>
#include <thread>
#include <vector>

#include "emu.h"

namespace {
typedef int Status;
constexpr Status OK = 0, INVALID_VALUE = 7, NOT_SUPPORTED = 15, NOT_INITIALIZED = 1;
constexpr int R_32F = 0, COMPUTE_32F = 68, COMPUTE_32F_PEDANTIC = 69, COMPUTE_32F_TF32 = 77;

struct Handle {
    void *stream = nullptr;
};

// The driver's stream queue (driver.cpp), looked up when first needed.
int enqueue(void *stream, std::function<int()> op) {
    using Fn = int (*)(void *, std::function<int()> *);
    static const Fn fn = reinterpret_cast<Fn>(dlsym(RTLD_DEFAULT, "headcode_emu_enqueue"));
    if (!fn) return NOT_INITIALIZED;  // libcuda.so.1 is not headcode-emu's
    return fn(stream, &op);
}

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
// One column-major C = alpha op(A) op(B) + beta C. op(A) rows and op(B) columns are packed
// contiguous first, so the inner loop is a unit-stride dot product with eight partial sums
// (cuBLAS's own summation order is unspecified too); columns are split over the cores.
void gemm_one(int m, int n, int k, float al, float be, const float *a, int ta, int lda,
              const float *b, int tb, int ldb, float *c, int ldc, bool round) {
    std::vector<float> ap((std::size_t)m * k), bp((std::size_t)n * k);
    for (int i = 0; i < m; ++i)
        for (int p = 0; p < k; ++p) {
            const float x = ta == 0 ? a[i + (long long)p * lda] : a[p + (long long)i * lda];
            ap[(std::size_t)i * k + p] = round ? tf32(x) : x;
        }
    for (int j = 0; j < n; ++j)
        for (int p = 0; p < k; ++p) {
            const float y = tb == 0 ? b[p + (long long)j * ldb] : b[j + (long long)p * ldb];
            bp[(std::size_t)j * k + p] = round ? tf32(y) : y;
        }
    auto cols = [&](int j0, int j1) {
        for (int j = j0; j < j1; ++j) {
            const float *y = &bp[(std::size_t)j * k];
            for (int i = 0; i < m; ++i) {
                const float *x = &ap[(std::size_t)i * k];
                float part[8] = {0, 0, 0, 0, 0, 0, 0, 0};
                int p = 0;
                for (; p + 8 <= k; p += 8)
                    for (int q = 0; q < 8; ++q) part[q] += x[p + q] * y[p + q];
                float acc = ((part[0] + part[1]) + (part[2] + part[3])) +
                            ((part[4] + part[5]) + (part[6] + part[7]));
                for (; p < k; ++p) acc += x[p] * y[p];
                float &out = c[i + (long long)j * ldc];
                out = be == 0.f ? al * acc : al * acc + be * out;  // beta 0: C is not read
            }
        }
    };
    const long long work = (long long)m * n * k;
    const int threads = work < (1 << 22) ? 1 : std::max(1u, std::thread::hardware_concurrency());
    if (threads == 1) {
        cols(0, n);
        return;
    }
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t)
        pool.emplace_back(cols, (int)((long long)n * t / threads), (int)((long long)n * (t + 1) / threads));
    for (auto &th : pool) th.join();
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
    const int r = enqueue(static_cast<Handle *>(h)->stream, [=] {
        for (int s = 0; s < batch; ++s)
            gemm_one(m, n, k, al, be, a + s * sa, ta, lda, b + s * sb, tb, ldb, c + s * sc, ldc,
                     round);
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

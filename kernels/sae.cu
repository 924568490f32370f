// sae.cu: training many tiny sparse autoencoders at once (arXiv 2405.12522 semantics).
//
// Notation: N SAEs (batch index s), each with R training rows of width d and n features.
//   X     [N, R, d]   training rows, contiguous per SAE
//   W_enc [N, n, d]   torch Linear layout (out x in); rows renormalised over d
//   b_enc [N, n]
//   W_dec [N, d, n]   torch Linear layout; rows renormalised over n (old-library quirk)
//   b     [N, d]      tied pre-encoder / post-decoder bias
// One training step (full batch), exactly the order of the reference:
//   1. W_enc, W_dec rows <- w / max(||w||, 1e-12)                (in place, no grad)
//   2. xc = X - b;  f = relu(xc W_enc^T + b_enc);  xhat = f W_dec^T + b;  diff = xhat - X
//      loss = sum(diff^2)/(R d) + lambda * sum(f)/R                (f >= 0 so |f| = f)
//   3. s1 = 2/(R d); dpre = [f>0] * (s1 diff W_dec + lambda/R)
//      g_W_dec = s1 diff^T f;  g_W_enc = dpre^T xc;  g_b_enc = colsum(dpre)
//      g_b = s1 colsum(diff) - g_b_enc W_enc                       (= colsum(s1 diff - dpre W_enc))
//   4. radial removal per row of W_enc and W_dec: g <- g - (sum_row g*w) w/||w||
//      (the library's hook; a zero row keeps its gradient)
//   5. Adam (PyTorch foreach semantics): m = lerp(m, g, 1-b1); v = v*b2 + (1-b2) g g;
//      p -= (lr/(1-b1^t)) * m / (sqrt(v)/sqrt(1-b2^t) + eps)
//
// Two paths:
//  (A) sae_train_persistent_f32: ONE launch for all steps; one block per SAE; the SAE's
//      params and activations live in (dynamic) shared memory, Adam moments in global memory
//      (each element touched only by the thread that owns it, L2 resident).
//      Launch: grid (N,1,1), blockDim (PERSIST_THREADS=512,1,1),
//      dynamic smem = 4 * persistent_smem_floats(R,d,n) bytes (see src/gpu/launch.rs; must be
//      <= the device opt-in limit, 227 KB on H100: d=64, n=200, R=10 -> ~127 KB).
//  (A2) sae_train_tiled_f32: as (A), with register tiling and 6 barriers a step instead of 8
//      (same arithmetic per element; layout and launch mapping above the kernel). The
//      host's Auto picks it wherever it fits.
//  (B) batched multi-kernel path, one set of launches per step for all N SAEs:
//      sae_center_f32, gemm_f32 or gemm_m16_f32 (x5, epilogue modes; the two weight-gradient
//      GEMMs split K where their tiles leave SMs idle), sae_colsum_f32 (both column sums in
//      one launch), sae_loss_partial_f32 + sae_loss_f32 (optional), sae_bias_adam_f32 (g_b and
//      Adam on both biases), sae_adam_radial_rows_f32 (x2; the second also advances the step).
//      For R <= 64 rows per SAE the two weight-gradient GEMMs and sae_adam_radial_rows_f32 are
//      replaced by sae_adam_radial_outer[_r8.._r32]_f32, which never materialise the gradients.
//      The Adam row kernels also apply the next step's renormalisation (1.) to the rows they
//      update, except on the last step; sae_renorm_rows_f32 runs once, before step 1. The
//      step index lives in device memory (t_dev): the last block of the step's last kernel
//      increments it, so one step is identical every time and the host captures it once as a
//      CUDA graph and replays it. 8 launches a step (10 unfused), 14 (16) before the fusions.
//  (C) as (B), with each gemm_f32 replaced by a cuBLAS strided-batched GEMM (FP32, or TF32
//      tensor cores when asked) followed by sae_epilogue_f32 for modes 1-3. cuBLAS picks its
//      own split-K and tile shapes (gemm_f32 has two fixed tiles and splits K only for the
//      weight gradients), and its TF32 path uses tensor cores, which gemm_f32 does not.
//      Launch configurations are documented above each kernel.
#include <cuda_runtime.h>
#include <math.h>

namespace {

struct AdamK {
    float lr_bc1;   // lr / (1 - b1^t)
    float bc2s;     // sqrt(1 - b2^t)
    float omb1;     // 1 - b1
    float b2;
    float omb2;     // 1 - b2
    float eps;
};

__device__ __forceinline__ float adam_update(float p, float g, float *m, float *v, const AdamK &a) {
    float mm = *m;
    mm = mm + a.omb1 * (g - mm);  // torch lerp with weight < 0.5
    float vv = (*v) * a.b2 + a.omb2 * g * g;
    *m = mm;
    *v = vv;
    const float denom = sqrtf(vv) / a.bc2s + a.eps;
    return p - a.lr_bc1 * (mm / denom);
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
    return v;  // all lanes
}

// warp_sum of every a[i] (and b[i]), the butterflies interleaved: each value sees exactly
// warp_sum's sequence of adds, so the sums are bit-identical to N (2N) warp_sum calls, but a
// warp issues N (2N) independent shuffles per level and waits once per level, not once per
// shuffle chain.
template <int N>
__device__ __forceinline__ void warp_sums(float (&a)[N]) {
#pragma unroll
    for (int off = 16; off > 0; off >>= 1)
#pragma unroll
        for (int i = 0; i < N; ++i) a[i] += __shfl_xor_sync(0xffffffffu, a[i], off);
}
template <int N>
__device__ __forceinline__ void warp_sums(float (&a)[N], float (&b)[N]) {
#pragma unroll
    for (int off = 16; off > 0; off >>= 1)
#pragma unroll
        for (int i = 0; i < N; ++i) {
            a[i] += __shfl_xor_sync(0xffffffffu, a[i], off);
            b[i] += __shfl_xor_sync(0xffffffffu, b[i], off);
        }
}

// The library's gradient hook: g - (sum g*w) * w/||w|| (a zero row keeps its gradient).
__device__ __forceinline__ float radial(float g, float dot, float w, float nrm) {
    return nrm == 0.f ? g : g - dot * (w / nrm);
}

__device__ __forceinline__ AdamK make_adam(float lr, float b1, float b2, float eps, unsigned t) {
    AdamK a;
    const double bc1 = 1.0 - pow((double)b1, (double)t);
    const double bc2 = 1.0 - pow((double)b2, (double)t);
    a.lr_bc1 = (float)((double)lr / bc1);
    a.bc2s = (float)sqrt(bc2);
    a.omb1 = 1.0f - b1;
    a.b2 = b2;
    a.omb2 = 1.0f - b2;
    a.eps = eps;
    return a;
}

// Adam's constants of step t (1-based), as sae_adam_table_f32 stored them.
#define ADAM_K 6
__device__ __forceinline__ AdamK adam_of(const float *__restrict__ table, unsigned t) {
    const float *p = table + (size_t)(t - 1u) * ADAM_K;
    AdamK a;
    a.lr_bc1 = p[0];
    a.bc2s = p[1];
    a.omb1 = p[2];
    a.b2 = p[3];
    a.omb2 = p[4];
    a.eps = p[5];
    return a;
}

}  // namespace

// table[(t-1)*ADAM_K + {0..5}] = make_adam(lr, b1, b2, eps, t) for t = 1..steps, once before
// training. Why: the bias corrections take two double-precision pow calls, a few hundred FP64
// instructions, and every thread of every Adam kernel recomputed them every step. The
// persistent trainers' 512 threads did so between two barriers each step: by arithmetic
// ~2,400 cycles a step on an H100 SM (64 FP64 lanes), half the per-head-z step's FMA floor.
// The per-head-on-result step's 4.4 M Adam threads spent ~70 us on them. Every kernel now
// reads 6 floats; the values are those make_adam gave, bit for bit.
// Launch: 1-D over steps threads, blockDim 256.
extern "C" __global__ void sae_adam_table_f32(float *__restrict__ table, unsigned steps,
                                              float lr, float b1, float b2, float eps) {
    const unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= steps) return;
    const AdamK a = make_adam(lr, b1, b2, eps, i + 1u);
    float *p = table + (size_t)i * ADAM_K;
    p[0] = a.lr_bc1;
    p[1] = a.bc2s;
    p[2] = a.omb1;
    p[3] = a.b2;
    p[4] = a.omb2;
    p[5] = a.eps;
}

// ------------------------------------------------------------------------------------------
// (B) batched multi-kernel path
// ------------------------------------------------------------------------------------------

// Renormalise rows in place: w <- w / max(||w||, 1e-12). rows = total rows over all SAEs.
// Launch: warp per row, blockDim 256, grid ceil(rows/8).
extern "C" __global__ void sae_renorm_rows_f32(float *__restrict__ w, unsigned rows, unsigned len) {
    const unsigned row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    const unsigned lane = threadIdx.x & 31u;
    if (row >= rows) return;
    float *r = w + (size_t)row * len;
    float ss = 0.f;
    for (unsigned j = lane; j < len; j += 32) ss += r[j] * r[j];
    ss = warp_sum(ss);
    const float nrm = fmaxf(sqrtf(ss), 1e-12f);  // torch F.normalize: w / max(||w||, eps)
    for (unsigned j = lane; j < len; j += 32) r[j] = r[j] / nrm;
}

// xc[s,r,k] = x[s*x_bs + r*x_rs + k] - b[s,k]; xc contiguous [N,R,d].
// (x may be strided, e.g. [E, H, d] codes input for per-head SAEs: x_bs = d, x_rs = H*d.)
// Launch: 1-D, one thread per element of N*R*d, blockDim 256.
extern "C" __global__ void sae_center_f32(const float *__restrict__ x, unsigned long long x_bs,
                                          unsigned long long x_rs, const float *__restrict__ b,
                                          unsigned N, unsigned R, unsigned d,
                                          float *__restrict__ xc) {
    const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)N * R * d) return;
    const unsigned k = (unsigned)(i % d);
    const size_t sr = i / d;
    const unsigned r = (unsigned)(sr % R), s = (unsigned)(sr / R);
    xc[i] = x[(size_t)s * x_bs + (size_t)r * x_rs + k] - b[(size_t)s * d + k];
}

// Batched GEMM with general strides and a fused epilogue.
//   acc(i,j) = sum_k A[s*a_bs + i*a_i + k*a_k] * B[s*b_bs + k*b_k + j*b_j]   (k ascending)
//   C[s*c_bs + i*ldc + j] =
//     mode 0: alpha*acc
//     mode 1: max(alpha*acc + bias[s*bias_bs + j], 0)                 (encoder + ReLU)
//     mode 2: alpha*acc + bias[s*bias_bs + j] - aux[same index as C]  (decoder residual)
//     mode 3: aux[same index] > 0 ? alpha*acc + beta : 0               (ReLU backward + L1)
// Split-K (k_split > 1, mode 0 only): block z = s*k_split + part sums only the part-th run of
// ceil(ceil(K/16)/k_split) whole 16-row K tiles and writes its partial sum to C + part*c_ps;
// the consumer adds the k_split partials in ascending part (sae_adam_radial_rows_f32). Why:
// the shared SAE's weight-gradient GEMMs (K = 1440, a 768 x 200 output) are 48 blocks of
// 90 K tiles each, on a 132-SM GPU; split 6 ways they are 288 blocks of 15. k_split = 1 is
// the plain GEMM, bit for bit.
// Two entry points, one body (gemm_tile<BM>): gemm_f32 computes 64 x 64 output tiles, each
// thread 4 rows x 4 adjacent columns; gemm_m16_f32 16 x 64 tiles, each thread 1 row x 4
// columns, for M <= 16 (the per-head SAEs' 10 rows: the 64-row tile left 54 of its 64 rows
// zero, so 84 % of its multiply-adds and shared-memory reads were wasted). Both read a
// thread's 4 B values as one float4 (2 shared-memory wavefronts a warp instead of 4).
// Every output is the same fmaf chain over k ascending in both, bit for bit.
// Launch: grid (ceil(Nc/64), ceil(M/BM), N*k_split) with BM = 64 (gemm_f32) or 16
// (gemm_m16_f32), blockDim (256,1,1); static smem ~17 KB (BM 64), ~11 KB (BM 16), two stages.
#define GBN 64
#define GBK 16
#define GEMM_PARAMS                                                                            \
    unsigned M, unsigned Nc, unsigned K, const float *__restrict__ A, unsigned long long a_bs, \
        unsigned long long a_i, unsigned long long a_k, const float *__restrict__ B,           \
        unsigned long long b_bs, unsigned long long b_k, unsigned long long b_j,               \
        float *__restrict__ C, unsigned long long c_bs, unsigned long long ldc,                \
        unsigned k_split, unsigned long long c_ps, unsigned mode, float alpha, float beta,     \
        const float *__restrict__ bias, unsigned long long bias_bs,                            \
        const float *__restrict__ aux
#define GEMM_ARGS                                                                          \
    M, Nc, K, A, a_bs, a_i, a_k, B, b_bs, b_k, b_j, C, c_bs, ldc, k_split, c_ps, mode, alpha, \
        beta, bias, bias_bs, aux
template <int BM>
__device__ __forceinline__ void gemm_tile(GEMM_PARAMS) {
    constexpr int RM = BM / 16;  // rows per thread
    // Two stages: the next K tile's global loads are issued into registers before the
    // current tile's multiply-adds and stored to the other stage after them, so the load
    // latency hides behind the arithmetic and each K tile needs one barrier, not two.
    // (Before, a block waited out a full global-load latency every 16 K rows: the shared
    // SAE's encode GEMM runs 92 blocks of 48 K tiles, about one block an SM, so nothing
    // else covered it.) The barrier before a store to a stage also orders it after every
    // read of that stage two tiles earlier.
    __shared__ float As[2][GBK][BM + 1];
    // rows padded by 4: float4-aligned, and the k-fast fill below is 2-way bank-conflicted
    __align__(16) __shared__ float Bs[2][GBK][GBN + 4];
    const unsigned s = blockIdx.z / k_split, part = blockIdx.z % k_split;
    const unsigned k_tiles = (K + GBK - 1) / GBK, part_tiles = (k_tiles + k_split - 1) / k_split;
    const unsigned k_begin = part * part_tiles * GBK;
    const unsigned k_end = min(K, (part + 1) * part_tiles * GBK);
    const unsigned i0 = blockIdx.y * BM, j0 = blockIdx.x * GBN;
    const unsigned tid = threadIdx.x, tx = tid & 15u, ty = tid >> 4;
    const float *Ab = A + (size_t)s * a_bs;
    const float *Bb = B + (size_t)s * b_bs;
    float acc[RM][4];
#pragma unroll
    for (int a = 0; a < RM; ++a)
#pragma unroll
        for (int b = 0; b < 4; ++b) acc[a][b] = 0.f;
    const bool a_k_fast = (a_k == 1);
    const bool b_j_fast = (b_j == 1);
    // this thread's elements of a tile: A (il, kl) x RM, B (kl2, jl) x 4
    unsigned a_il[RM], a_kl[RM], b_jl[4], b_kl[4];
#pragma unroll
    for (int q = 0; q < RM; ++q) {  // A tile: BM x GBK = 256 RM elements
        const unsigned l = tid + 256u * q;
        if (a_k_fast) { a_kl[q] = l % GBK; a_il[q] = l / GBK; } else { a_il[q] = l % BM; a_kl[q] = l / BM; }
    }
#pragma unroll
    for (int q = 0; q < 4; ++q) {  // B tile: GBK x GBN = 1024 elements
        const unsigned l = tid + 256u * q;
        if (b_j_fast) { b_jl[q] = l % GBN; b_kl[q] = l / GBN; } else { b_kl[q] = l % GBK; b_jl[q] = l / GBK; }
    }
    float ra[RM], rb[4];
    auto load = [&](unsigned k0) {
#pragma unroll
        for (int q = 0; q < RM; ++q) {
            const unsigned gi = i0 + a_il[q], gk = k0 + a_kl[q];
            ra[q] = (gi < M && gk < k_end) ? Ab[(size_t)gi * a_i + (size_t)gk * a_k] : 0.f;
        }
#pragma unroll
        for (int q = 0; q < 4; ++q) {
            const unsigned gj = j0 + b_jl[q], gk = k0 + b_kl[q];
            rb[q] = (gj < Nc && gk < k_end) ? Bb[(size_t)gk * b_k + (size_t)gj * b_j] : 0.f;
        }
    };
    if (k_begin < k_end) load(k_begin);
    unsigned st = 0;
    for (unsigned k0 = k_begin; k0 < k_end; k0 += GBK, st ^= 1u) {
#pragma unroll
        for (int q = 0; q < RM; ++q) As[st][a_kl[q]][a_il[q]] = ra[q];
#pragma unroll
        for (int q = 0; q < 4; ++q) Bs[st][b_kl[q]][b_jl[q]] = rb[q];
        __syncthreads();
        if (k0 + GBK < k_end) load(k0 + GBK);  // in flight during the multiply-adds below
#pragma unroll
        for (int kk = 0; kk < GBK; ++kk) {
            float av[RM];
#pragma unroll
            for (int a = 0; a < RM; ++a) av[a] = As[st][kk][ty + 16 * a];
            const float4 b4 = *reinterpret_cast<const float4 *>(&Bs[st][kk][4 * tx]);
            const float bv[4] = {b4.x, b4.y, b4.z, b4.w};
#pragma unroll
            for (int a = 0; a < RM; ++a)
#pragma unroll
                for (int b = 0; b < 4; ++b) acc[a][b] = fmaf(av[a], bv[b], acc[a][b]);
        }
    }
    float *Cb = C + (size_t)part * c_ps + (size_t)s * c_bs;
#pragma unroll
    for (int a = 0; a < RM; ++a) {
        const unsigned gi = i0 + ty + 16 * a;
        if (gi >= M) continue;
#pragma unroll
        for (int b = 0; b < 4; ++b) {
            const unsigned gj = j0 + 4 * tx + b;
            if (gj >= Nc) continue;
            const size_t ci = (size_t)gi * ldc + gj;
            float v = alpha * acc[a][b];
            if (mode == 1) {
                v = fmaxf(v + bias[(size_t)s * bias_bs + gj], 0.f);
            } else if (mode == 2) {
                v = (v + bias[(size_t)s * bias_bs + gj]) - aux[(size_t)s * c_bs + ci];
            } else if (mode == 3) {
                v = aux[(size_t)s * c_bs + ci] > 0.f ? v + beta : 0.f;
            }
            Cb[ci] = v;
        }
    }
}
extern "C" __global__ void __launch_bounds__(256) gemm_f32(GEMM_PARAMS) {
    gemm_tile<64>(GEMM_ARGS);
}
extern "C" __global__ void __launch_bounds__(256) gemm_m16_f32(GEMM_PARAMS) {
    gemm_tile<16>(GEMM_ARGS);
}

// dst[s,c] = sum_r src[s,r,c], for two (src, C, dst) jobs at once (blockIdx.z picks one: the
// step's column sums of dpre and diff, one launch instead of two). Thread (column c, group y)
// sums rows y, y + G, y + 2G, ...
// (ascending); the G partial sums are then added in ascending y, a fixed order, so the
// result does not depend on scheduling. Why not one thread a column, rows in order: for
// the shared SAE (R = 1440 rows, C = 768) that is 768 threads on a few SMs, each waiting on
// 1440 dependent loads; here each of C/32 x N blocks of 1024 threads reads R/G rows.
// G = blockDim.y = min(R, COLSUM_G) row groups: with R <= G every group holds at most one row,
// so the sum is the rows' in ascending order whatever G is, and the per-head SAEs' 10 rows
// need 320 threads a block, not 1024.
// Launch: grid (ceil(max(C0, C1)/32), N, 2), blockDim (32, G, 1) with 1 <= G <= COLSUM_G;
// static smem 4.2 KB.
#define COLSUM_G 32
extern "C" __global__ void __launch_bounds__(1024)
sae_colsum_f32(const float *__restrict__ src0, unsigned C0, float *__restrict__ dst0,
               const float *__restrict__ src1, unsigned C1, float *__restrict__ dst1,
               unsigned N, unsigned R) {
    __shared__ float part[COLSUM_G][33];
    const bool second = blockIdx.z != 0;
    const float *__restrict__ src = second ? src1 : src0;
    float *__restrict__ dst = second ? dst1 : dst0;
    const unsigned C = second ? C1 : C0;
    const unsigned s = blockIdx.y, x = threadIdx.x, y = threadIdx.y;
    const unsigned c = blockIdx.x * 32u + x;
    if (s >= N || blockIdx.x * 32u >= C) return;  // whole block: uniform
    const unsigned G = blockDim.y;
    float acc = 0.f;
    if (c < C) {
        const float *p = src + (size_t)s * R * C + c;
        for (unsigned r = y; r < R; r += G) acc += p[(size_t)r * C];
    }
    part[y][x] = acc;
    __syncthreads();
    if (y == 0 && c < C) {
        float t = 0.f;
        for (unsigned g = 0; g < G; ++g) t += part[g][x];
        dst[(size_t)s * C + c] = t;
    }
}

// Adam on both biases, with g_b formed on the way (one launch instead of three):
//   thread i <  N n: b_enc[i] with gradient g_benc[i];
//   thread i >= N n: b[s,k] (i - N n = s d + k) with
//     g_b[s,k] = s1*colsum_diff[s,k] - sum_j g_benc[s,j] * W_enc[s,j,k]   (j ascending).
// W_enc must still hold this step's weights: launch it before the W_enc Adam row kernel.
// Launch: 1-D over N*(n + d) threads, blockDim 256.
extern "C" __global__ void sae_bias_adam_f32(float *__restrict__ b_enc, float *__restrict__ m_be,
                                             float *__restrict__ v_be, float *__restrict__ b,
                                             float *__restrict__ m_b, float *__restrict__ v_b,
                                             const float *__restrict__ g_benc,
                                             const float *__restrict__ colsum_diff,
                                             const float *__restrict__ w_enc, unsigned N,
                                             unsigned n, unsigned d, float s1,
                                             const unsigned *__restrict__ t_dev,
                                             const float *__restrict__ adam) {
    const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    const size_t ne = (size_t)N * n;
    if (i >= ne + (size_t)N * d) return;
    const AdamK a = adam_of(adam, *t_dev);
    if (i < ne) {
        b_enc[i] = adam_update(b_enc[i], g_benc[i], &m_be[i], &v_be[i], a);
        return;
    }
    const size_t ib = i - ne;
    const unsigned s = (unsigned)(ib / d), k = (unsigned)(ib % d);
    const float *ge = g_benc + (size_t)s * n;
    const float *we = w_enc + (size_t)s * n * d + k;
    float acc = 0.f;
    for (unsigned j = 0; j < n; ++j) acc = fmaf(ge[j], we[(size_t)j * d], acc);
    const float g = s1 * colsum_diff[ib] - acc;
    b[ib] = adam_update(b[ib], g, &m_b[ib], &v_b[ib], a);
}

// The loss in two passes, so one large SAE (the shared one: 1440 x 768 residuals) is summed
// by many blocks instead of one block's 256 threads.
// Pass 1: block (p, s) sums diff^2 and f over its p-th contiguous chunk of SAE s's R*d and
// R*n elements (chunks of ceil(len / P)) into part[(s*P + p)*2 + {0, 1}].
// Launch: grid (P, N, 1), blockDim (256, 1, 1).
extern "C" __global__ void sae_loss_partial_f32(const float *__restrict__ diff,
                                                const float *__restrict__ f, unsigned R,
                                                unsigned d, unsigned n, unsigned P,
                                                float *__restrict__ part) {
    __shared__ float red[2][32];
    const unsigned p = blockIdx.x, s = blockIdx.y;
    const size_t len_d = (size_t)R * d, len_f = (size_t)R * n;
    const size_t cd = (len_d + P - 1) / P, cf = (len_f + P - 1) / P;
    const float *df = diff + (size_t)s * len_d;
    const float *ff = f + (size_t)s * len_f;
    const size_t end_d = (p + 1) * cd < len_d ? (p + 1) * cd : len_d;
    const size_t end_f = (p + 1) * cf < len_f ? (p + 1) * cf : len_f;
    float a = 0.f, b = 0.f;
    for (size_t i = p * cd + threadIdx.x; i < end_d; i += blockDim.x) a += df[i] * df[i];
    for (size_t i = p * cf + threadIdx.x; i < end_f; i += blockDim.x) b += ff[i];
    a = warp_sum(a);
    b = warp_sum(b);
    const unsigned lane = threadIdx.x & 31u, warp = threadIdx.x >> 5;
    if (lane == 0) { red[0][warp] = a; red[1][warp] = b; }
    __syncthreads();
    if (threadIdx.x == 0) {
        float sa = 0.f, sb = 0.f;
        for (unsigned w = 0; w < (blockDim.x >> 5); ++w) { sa += red[0][w]; sb += red[1][w]; }
        part[((size_t)s * P + p) * 2] = sa;
        part[((size_t)s * P + p) * 2 + 1] = sb;
    }
}

// Pass 2: loss[s*loss_stride + step] = sum(diff^2)/(R d) + lambda * sum(f)/R, the P partial
// sums added in order; step = *t_dev - 1. Launch: 1-D over N threads, blockDim 256.
extern "C" __global__ void sae_loss_f32(const float *__restrict__ part, unsigned N, unsigned P,
                                        unsigned R, unsigned d, float lambda,
                                        float *__restrict__ loss, unsigned loss_stride,
                                        const unsigned *__restrict__ t_dev) {
    const unsigned s = blockIdx.x * blockDim.x + threadIdx.x;
    if (s >= N) return;
    float sa = 0.f, sb = 0.f;
    for (unsigned p = 0; p < P; ++p) {
        sa += part[((size_t)s * P + p) * 2];
        sb += part[((size_t)s * P + p) * 2 + 1];
    }
    const unsigned step = *t_dev - 1u;
    loss[(size_t)s * loss_stride + step] = sa / (float)((size_t)R * d) + lambda * (sb / (float)R);
}

// One weight row's radial gradient removal + Adam and, when `renorm`, the next step's
// renormalisation w / max(||w||, 1e-12) of the updated row (steps 4, 5 and the next step's 1,
// so the batched step launches no renorm kernel: the host renormalises once before step 1).
// Warp per row; lane handles elements lane, lane + 32, ..., summed in that order, which is
// sae_renorm_rows_f32's order, so the fused renormalisation is bit-identical to launching it.
// grad(k, e) is the row's gradient at element e = lane + 32 k (k = 0 where PL == 0); a
// caller with PL > 0 may hand in values it formed for each k beforehand.
// PL > 0 (len <= 32 PL): the gradient and the weights stay in registers, so each element of
// w, m and v is read once and written once and the gradient is formed once. By arithmetic
// this cuts the per-head SAEs on result (144 x 768 -> 200: 177 MB of weights) from ~1.95 GB
// of DRAM traffic a step to ~1.42 GB (the floor, state read and written once, is 1.06 GB):
// the separate renorm read and wrote every weight, and the row update read each weight
// twice. PL == 0: any len, values re-read from memory.
template <int PL, class Grad>
__device__ __forceinline__ void adam_radial_row(float *__restrict__ w, float *__restrict__ m,
                                                float *__restrict__ v, size_t base, unsigned len,
                                                unsigned lane, const AdamK &a, bool renorm,
                                                Grad grad) {
    constexpr int C = PL > 0 ? PL : 1;
    float gc[C], wc[C];
    float dot = 0.f, ss = 0.f;
    if constexpr (PL > 0) {
#pragma unroll
        for (int k = 0; k < PL; ++k) {
            const unsigned e = lane + 32u * k;
            gc[k] = 0.f;
            wc[k] = 0.f;
            if (e < len) {
                gc[k] = grad(k, e);
                wc[k] = w[base + e];
                dot += gc[k] * wc[k];
                ss += wc[k] * wc[k];
            }
        }
    } else {
        for (unsigned e = lane; e < len; e += 32) {
            const float g = grad(0u, e), wi = w[base + e];
            dot += g * wi;
            ss += wi * wi;
        }
    }
    dot = warp_sum(dot);
    const float nrm = sqrtf(warp_sum(ss));
    float ss2 = 0.f;
    if constexpr (PL > 0) {
#pragma unroll
        for (int k = 0; k < PL; ++k) {
            const unsigned e = lane + 32u * k;
            if (e < len) {
                const size_t i = base + e;
                wc[k] = adam_update(wc[k], radial(gc[k], dot, wc[k], nrm), &m[i], &v[i], a);
                ss2 += wc[k] * wc[k];
            }
        }
    } else {
        for (unsigned e = lane; e < len; e += 32) {
            const size_t i = base + e;
            const float wi = w[i];
            const float wn = adam_update(wi, radial(grad(0u, e), dot, wi, nrm), &m[i], &v[i], a);
            w[i] = wn;
            ss2 += wn * wn;
        }
    }
    // renorm is warp-uniform (it depends on the step only), as warp_sum needs
    const float nrm2 = renorm ? fmaxf(sqrtf(warp_sum(ss2)), 1e-12f) : 1.f;
    if constexpr (PL > 0) {
#pragma unroll
        for (int k = 0; k < PL; ++k) {
            const unsigned e = lane + 32u * k;
            if (e < len) w[base + e] = renorm ? wc[k] / nrm2 : wc[k];
        }
    } else if (renorm) {
        for (unsigned e = lane; e < len; e += 32) w[base + e] = w[base + e] / nrm2;
    }
}

// End of a step's last kernel: the grid's last block to finish advances *t_dev, so the
// step needs no sae_step_inc_u32 launch. Every thread reads *t_dev before its block's
// barrier, and a block is counted only after it, so the increment follows every read of the
// step index in the grid; the counter is reset for the next replay of the captured step.
__device__ __forceinline__ void step_done(unsigned *t_dev, unsigned *done) {
    __syncthreads();
    if (threadIdx.x == 0) {
        __threadfence();
        if (atomicAdd(done, 1u) == gridDim.x - 1u) {
            *done = 0u;
            *t_dev += 1u;
        }
    }
}

// Radial gradient removal + Adam for rows of a unit-norm weight (all SAEs' rows stacked),
// then the next step's renormalisation unless this is the last step (*t_dev == steps: the
// stored params are those after the last Adam step, like the torch state dict).
// *t_dev = 1-based step (read from device memory so one captured step replays as a CUDA
// graph); finish != 0: this launch is the step's last, and advances it (step_done).
// The gradient is g_parts split-K partial sums of gemm_f32, g_ps floats apart, added in
// ascending part (g_parts = 1: the gradient itself).
// Launch: warp per row, blockDim 256, grid ceil(rows/8) (1-D).
extern "C" __global__ void sae_adam_radial_rows_f32(float *__restrict__ w, const float *__restrict__ g,
                                                    unsigned g_parts, unsigned long long g_ps,
                                                    float *__restrict__ m, float *__restrict__ v,
                                                    unsigned rows, unsigned len, unsigned *t_dev,
                                                    unsigned *done, unsigned finish,
                                                    unsigned steps,
                                                    const float *__restrict__ adam) {
    const unsigned row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    const unsigned lane = threadIdx.x & 31u;
    const unsigned t = *t_dev;
    if (row < rows) {  // warp-uniform
        const AdamK a = adam_of(adam, t);
        const size_t base = (size_t)row * len;
        adam_radial_row<0>(w, m, v, base, len, lane, a, t < steps, [&](unsigned, unsigned e) {
            float acc = g[base + e];
            for (unsigned p = 1; p < g_parts; ++p) acc += g[(size_t)p * g_ps + base + e];
            return acc;
        });
    }
    if (finish) step_done(t_dev, done);
}

// Fused outer-product gradient + radial removal + Adam (+ the next step's renormalisation
// and, with finish, the step's advance, as sae_adam_radial_rows_f32), for few rows per SAE
// (small R): the weight gradient is never materialised. For row rr of a weight
// [rows_total, len] (SAE s = rr / rows_per, p = rr % rows_per):
//   g[rr, e] = scale * sum_r A[(s*R + r)*rows_per + p] * B[(s*R + r)*len + e]   (r ascending)
// W_enc: A = dpre [c,R,n], B = xc [c,R,d], rows_per = n, len = d, scale = 1.
// W_dec: A = diff [c,R,d], B = f  [c,R,n], rows_per = d, len = n, scale = s1.
// Same arithmetic order as gemm_f32 + sae_adam_radial_rows_f32.
// Five entry points, one body: sae_adam_radial_outer_f32 takes any len; the _r{PL}_ ones
// keep the row in registers and need len <= 32 PL (the host picks the smallest that fits,
// src/gpu/launch.rs adam_row_regs). Launch: warp per row, blockDim 256, grid
// ceil(rows_total/8) (1-D).
template <int PL>
__device__ __forceinline__ void adam_radial_outer(float *__restrict__ w, float *__restrict__ m,
                                                  float *__restrict__ v,
                                                  const float *__restrict__ A,
                                                  const float *__restrict__ B,
                                                  unsigned rows_total, unsigned rows_per,
                                                  unsigned len, unsigned R, float scale,
                                                  unsigned *t_dev, unsigned *done,
                                                  unsigned finish, unsigned steps,
                                                  const float *__restrict__ adam) {
    const unsigned row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    const unsigned lane = threadIdx.x & 31u;
    const unsigned t = *t_dev;
    if (row < rows_total) {  // warp-uniform
        const AdamK a = adam_of(adam, t);
        const unsigned s = row / rows_per, p = row % rows_per;
        const float *Ab = A + (size_t)s * R * rows_per + p;
        const float *Bb = B + (size_t)s * R * len;
        if constexpr (PL > 0) {
            // The PL elements' sums advance together, r outer: each r issues PL independent
            // loads of B. Element by element (r inner), every load waited for the previous
            // one: R x PL dependent round trips a row (240 for the per-head SAEs on result's
            // W_enc), and the H200 measured the kernel at 7x the DRAM time of the state it
            // streams. Each element's fmaf chain and order are unchanged.
            float gp[PL];
#pragma unroll
            for (int k = 0; k < PL; ++k) gp[k] = 0.f;
            for (unsigned r = 0; r < R; ++r) {
                const float ar = Ab[(size_t)r * rows_per];
                const float *Br = Bb + (size_t)r * len;
#pragma unroll
                for (int k = 0; k < PL; ++k) {
                    const unsigned e = lane + 32u * k;
                    if (e < len) gp[k] = fmaf(ar, Br[e], gp[k]);
                }
            }
            adam_radial_row<PL>(w, m, v, (size_t)row * len, len, lane, a, t < steps,
                                [&](unsigned k, unsigned) { return scale * gp[k]; });
        } else {
            adam_radial_row<0>(w, m, v, (size_t)row * len, len, lane, a, t < steps,
                               [&](unsigned, unsigned e) {
                                   float g = 0.f;
                                   for (unsigned r = 0; r < R; ++r)
                                       g = fmaf(Ab[(size_t)r * rows_per],
                                                Bb[(size_t)r * len + e], g);
                                   return scale * g;
                               });
        }
    }
    if (finish) step_done(t_dev, done);
}

#define ADAM_OUTER_PARAMS                                                                   \
    float *__restrict__ w, float *__restrict__ m, float *__restrict__ v,                   \
        const float *__restrict__ A, const float *__restrict__ B, unsigned rows_total,     \
        unsigned rows_per, unsigned len, unsigned R, float scale,                          \
        unsigned *t_dev, unsigned *done, unsigned finish, unsigned steps,                   \
        const float *__restrict__ adam
#define ADAM_OUTER_ARGS \
    w, m, v, A, B, rows_total, rows_per, len, R, scale, t_dev, done, finish, steps, adam
extern "C" __global__ void sae_adam_radial_outer_f32(ADAM_OUTER_PARAMS) {
    adam_radial_outer<0>(ADAM_OUTER_ARGS);
}
extern "C" __global__ void sae_adam_radial_outer_r8_f32(ADAM_OUTER_PARAMS) {
    adam_radial_outer<8>(ADAM_OUTER_ARGS);
}
extern "C" __global__ void sae_adam_radial_outer_r16_f32(ADAM_OUTER_PARAMS) {
    adam_radial_outer<16>(ADAM_OUTER_ARGS);
}
extern "C" __global__ void sae_adam_radial_outer_r24_f32(ADAM_OUTER_PARAMS) {
    adam_radial_outer<24>(ADAM_OUTER_ARGS);
}
extern "C" __global__ void sae_adam_radial_outer_r32_f32(ADAM_OUTER_PARAMS) {
    adam_radial_outer<32>(ADAM_OUTER_ARGS);
}

// Epilogue of the cuBLAS GEMMs (path C): the same element-wise tails as gemm_f32's modes,
// applied to C = alpha*acc that cuBLAS wrote. C, aux contiguous [N, M, Nc].
//   mode 1: max(C + bias[s*bias_bs + j], 0);  mode 2: C + bias[s*bias_bs + j] - aux;
//   mode 3: aux > 0 ? C + beta : 0
// Launch: 1-D, one thread per element of N*M*Nc, blockDim 256.
extern "C" __global__ void sae_epilogue_f32(float *__restrict__ C, unsigned N, unsigned M,
                                            unsigned Nc, unsigned mode, float beta,
                                            const float *__restrict__ bias,
                                            unsigned long long bias_bs,
                                            const float *__restrict__ aux) {
    const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)N * M * Nc) return;
    const unsigned j = (unsigned)(i % Nc);
    const size_t s = i / ((size_t)M * Nc);
    const float c = C[i];
    float out;
    if (mode == 1) out = fmaxf(c + bias[s * bias_bs + j], 0.f);
    else if (mode == 2) out = (c + bias[s * bias_bs + j]) - aux[i];
    else if (mode == 3) out = aux[i] > 0.f ? c + beta : 0.f;
    else out = c;
    C[i] = out;
}

// ------------------------------------------------------------------------------------------
// (A) persistent path: one block per SAE, all steps in one launch
// ------------------------------------------------------------------------------------------
// Rows of W_enc (len d) and W_dec (len n) are at most PERSIST_MAX_ROW long (the host checks,
// launch.rs), so each lane owns at most PERSIST_MAXQ elements of a row.
#define PERSIST_MAXQ 8
#define PERSIST_MAX_ROW (32 * PERSIST_MAXQ)

// One warp updates one unit-norm weight row wr[0..len) (shared memory):
//   g[e] = scale * sum_r A[r*lda] * B[r*ldb + e]   (r ascending, fmaf chain from 0)
// then radial removal with the row's dot(g, w) and ||w||, then Adam with the moments m, v
// (global). The lane's moments are loaded before the gradient pass so their latency overlaps
// it, and its gradients stay in registers for the second pass: the arithmetic, and its
// order, are those of a two-pass loop that recomputes g.
__device__ __forceinline__ void persist_row_update(float *wr, unsigned len, const float *A,
                                                   unsigned lda, const float *B, unsigned ldb,
                                                   unsigned R, float scale, float *m, float *v,
                                                   const AdamK &ad, unsigned lane) {
    float gq[PERSIST_MAXQ], mq[PERSIST_MAXQ], vq[PERSIST_MAXQ];
#pragma unroll
    for (unsigned q = 0; q < PERSIST_MAXQ; ++q) {
        const unsigned e = lane + 32u * q;
        if (e < len) { mq[q] = m[e]; vq[q] = v[e]; }
    }
    float dot = 0.f, ss = 0.f;
#pragma unroll
    for (unsigned q = 0; q < PERSIST_MAXQ; ++q) {
        const unsigned e = lane + 32u * q;
        if (e < len) {
            float g = 0.f;
            for (unsigned r = 0; r < R; ++r) g = fmaf(A[(size_t)r * lda], B[(size_t)r * ldb + e], g);
            g = scale * g;
            gq[q] = g;
            dot += g * wr[e];
            ss += wr[e] * wr[e];
        }
    }
    dot = warp_sum(dot);
    const float nrm = sqrtf(warp_sum(ss));
#pragma unroll
    for (unsigned q = 0; q < PERSIST_MAXQ; ++q) {
        const unsigned e = lane + 32u * q;
        if (e < len) {
            const float w = wr[e];
            const float g = radial(gq[q], dot, w, nrm);
            wr[e] = adam_update(w, g, &mq[q], &vq[q], ad);
            m[e] = mq[q];
            v[e] = vq[q];
        }
    }
}

// Pieces both persistent kernels share (one block per SAE s; tid/nt over the block).
// Parameters in: W_enc [n][d] -> We rows of stride ldwe, W_dec [d][n] -> Wd rows of stride
// ldwd, b_enc -> be, b -> bb.
__device__ __forceinline__ void persist_load_params(const float *W_enc, const float *b_enc,
                                                    const float *W_dec, const float *b_tied,
                                                    float *We, unsigned ldwe, float *Wd,
                                                    unsigned ldwd, float *be, float *bb,
                                                    unsigned s, unsigned d, unsigned n,
                                                    unsigned tid, unsigned nt) {
    const size_t we_off = (size_t)s * n * d, wd_off = (size_t)s * d * n;
    for (unsigned i = tid; i < n * d; i += nt) We[(i / d) * ldwe + i % d] = W_enc[we_off + i];
    for (unsigned i = tid; i < d * n; i += nt) Wd[(i / n) * ldwd + i % n] = W_dec[wd_off + i];
    for (unsigned i = tid; i < n; i += nt) be[i] = b_enc[(size_t)s * n + i];
    for (unsigned i = tid; i < d; i += nt) bb[i] = b_tied[(size_t)s * d + i];
}

// Parameters out (un-normalised, after the last Adam step, like the torch state dict).
__device__ __forceinline__ void persist_store_params(float *W_enc, float *b_enc, float *W_dec,
                                                     float *b_tied, const float *We,
                                                     unsigned ldwe, const float *Wd,
                                                     unsigned ldwd, const float *be,
                                                     const float *bb, unsigned s, unsigned d,
                                                     unsigned n, unsigned tid, unsigned nt) {
    const size_t we_off = (size_t)s * n * d, wd_off = (size_t)s * d * n;
    for (unsigned i = tid; i < n * d; i += nt) W_enc[we_off + i] = We[(i / d) * ldwe + i % d];
    for (unsigned i = tid; i < d * n; i += nt) W_dec[wd_off + i] = Wd[(i / n) * ldwd + i % n];
    for (unsigned i = tid; i < n; i += nt) b_enc[(size_t)s * n + i] = be[i];
    for (unsigned i = tid; i < d; i += nt) b_tied[(size_t)s * d + i] = bb[i];
}

// w <- w / max(||w||, 1e-12) for every row of We (length d) and Wd (length n), warp per row.
__device__ __forceinline__ void persist_renorm_all(float *We, unsigned ldwe, float *Wd,
                                                   unsigned ldwd, unsigned d, unsigned n,
                                                   unsigned warp, unsigned nwarps,
                                                   unsigned lane) {
    for (unsigned row = warp; row < n + d; row += nwarps) {
        float *r;
        unsigned len;
        if (row < n) { r = We + (size_t)row * ldwe; len = d; }
        else { r = Wd + (size_t)(row - n) * ldwd; len = n; }
        float ss = 0.f;
        for (unsigned j = lane; j < len; j += 32) ss += r[j] * r[j];
        ss = warp_sum(ss);
        const float nrm = fmaxf(sqrtf(ss), 1e-12f);
        for (unsigned j = lane; j < len; j += 32) r[j] = r[j] / nrm;
    }
}

// g_b[k] = s1 * sum_r diff[r][k] - sum_j gbe[j] We[j][k], then Adam on bb (thread per k;
// reads We, so it must finish before We is updated). diff rows have stride ldd.
__device__ __forceinline__ void persist_grad_b_adam(float *bb, const float *diff, unsigned ldd,
                                                    const float *gbe, const float *We,
                                                    unsigned ldwe, unsigned R, unsigned d,
                                                    unsigned n, float s1, float *m_b,
                                                    float *v_b, unsigned s, const AdamK &ad,
                                                    unsigned tid, unsigned nt) {
    for (unsigned k = tid; k < d; k += nt) {
        float cs = 0.f;
        for (unsigned r = 0; r < R; ++r) cs += diff[(size_t)r * ldd + k];
        float acc = 0.f;
        for (unsigned j = 0; j < n; ++j) acc = fmaf(gbe[j], We[(size_t)j * ldwe + k], acc);
        const float g = s1 * cs - acc;
        const size_t gi = (size_t)s * d + k;
        bb[k] = adam_update(bb[k], g, &m_b[gi], &v_b[gi], ad);
    }
}

// The step's loss, part 1 (all threads): thread-strided sums of diff^2 (R rows of d, row
// stride ldd) and of f (R rows of n, row stride ldff) in element order, then per-warp sums
// into red[warp] and red[32 + warp].
__device__ __forceinline__ void persist_loss_partials(const float *diff, unsigned ldd,
                                                      const float *f, unsigned ldff, unsigned R,
                                                      unsigned d, unsigned n, float *red,
                                                      unsigned tid, unsigned nt, unsigned lane,
                                                      unsigned warp) {
    float a = 0.f, b = 0.f;
    for (unsigned i = tid; i < R * d; i += nt) {
        const float x = diff[(i / d) * ldd + i % d];
        a += x * x;
    }
    for (unsigned i = tid; i < R * n; i += nt) b += f[(i / n) * ldff + i % n];
    a = warp_sum(a);
    b = warp_sum(b);
    if (lane == 0) { red[warp] = a; red[32 + warp] = b; }
}

// Part 2 (one thread, after a barrier): loss[s*steps + t-1] = sum(diff^2)/(R d) +
// lambda * sum(f)/R from the warp sums in order.
__device__ __forceinline__ void persist_loss_store(const float *red, unsigned nwarps, unsigned R,
                                                   unsigned d, float lambda, float *loss,
                                                   unsigned s, unsigned steps, unsigned t) {
    float sa = 0.f, sb = 0.f;
    for (unsigned w = 0; w < nwarps; ++w) { sa += red[w]; sb += red[32 + w]; }
    loss[(size_t)s * steps + (t - 1)] = sa / (float)((size_t)R * d) + lambda * (sb / (float)R);
}

// ------------------------------------------------------------------------------------------
// Shared-memory layout (floats), strides padded by one to avoid bank conflicts:
//   We [n][d+1] | Wd [d][n+1] | be [n] | bb [d] | xs [R][d] | xc [R][d] | f [R][n]
//   | diff [R][d] | dpre [R][n] | gbe [n] | red [64]
// total = n(d+1) + d(n+1) + 2n + d + 3Rd + 2Rn + 64  (persistent_smem_floats in launch.rs)
// m_* / v_* are zero-initialised by the caller; loss may be 0 (NULL) or [N, steps].
// ------------------------------------------------------------------------------------------
// Phase clocks of the persistent trainers (the *_clocks_f32 twins, run by `bench` to show
// where a step's time goes inside the one launch; the plain kernels record nothing and are
// compiled from the same body with the clock calls removed).
// Thread 0 stores clock64() after each phase's closing barrier, so a phase's time is
// barrier to barrier: that of its slowest warp. Block s's record is CLOCK_HEAD + steps*P
// u64 at clocks + s*(CLOCK_HEAD + steps*P):
//   [0] %smid   [1] %globaltimer (ns) at entry   [2] %globaltimer after the params are stored
//   [3] clock64 before step 1   [CLOCK_HEAD + (t-1)*P + p] clock64 after phase p of step t
// P = TILED_PHASES or PERSIST_PHASES (phase names: src/gpu/clocks.rs). The stores are never
// read back by the kernel, so thread 0 does not wait on them; the arithmetic is the plain
// kernel's (the self-test holds the trained params bit-identical).
#define CLOCK_HEAD 4
#define PERSIST_PHASES 8
#define TILED_PHASES 6

// %smid and %globaltimer have no CUDA intrinsic; the emulation, which runs no PTX, gives
// its own (emu/include/cuda_runtime.h).
__device__ __forceinline__ unsigned long long clock_sm_id() {
#ifdef HEADCODE_EMU
    return emu_sm_id();
#else
    unsigned id;
    asm volatile("mov.u32 %0, %%smid;" : "=r"(id));
    return id;
#endif
}
__device__ __forceinline__ unsigned long long clock_global_ns() {
#ifdef HEADCODE_EMU
    return emu_global_ns();
#else
    unsigned long long t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    return t;
#endif
}

template <bool ON>
struct PhaseClocks {
    unsigned long long *rec = nullptr;  // this block's record (thread 0 only), else null
    unsigned phases = 0;
    __device__ __forceinline__ PhaseClocks(unsigned long long *clocks, unsigned steps,
                                           unsigned P) {
        if constexpr (ON) {
            if (threadIdx.x == 0) {
                phases = P;
                rec = clocks + (size_t)blockIdx.x * (CLOCK_HEAD + (size_t)steps * P);
                rec[0] = clock_sm_id();
                rec[1] = clock_global_ns();
            }
        }
    }
    __device__ __forceinline__ void loop_start() const {
        if constexpr (ON) {
            if (rec) rec[3] = (unsigned long long)clock64();
        }
    }
    __device__ __forceinline__ void mark(unsigned t, unsigned p) const {
        if constexpr (ON) {
            if (rec) rec[CLOCK_HEAD + (size_t)(t - 1u) * phases + p] = (unsigned long long)clock64();
        }
    }
    __device__ __forceinline__ void finish() const {
        if constexpr (ON) {
            if (rec) rec[2] = clock_global_ns();
        }
    }
};

// The persistent trainers' parameters (one signature for both kernels and their twins).
#define PERSIST_PARAMS                                                                      \
    const float *__restrict__ X, float *__restrict__ W_enc, float *__restrict__ b_enc,     \
        float *__restrict__ W_dec, float *__restrict__ b_tied, float *__restrict__ m_we,    \
        float *__restrict__ v_we, float *__restrict__ m_be, float *__restrict__ v_be,       \
        float *__restrict__ m_wd, float *__restrict__ v_wd, float *__restrict__ m_b,        \
        float *__restrict__ v_b, unsigned R, unsigned d, unsigned n, unsigned steps,        \
        const float *__restrict__ adam, float lambda, float *__restrict__ loss
#define PERSIST_ARGS                                                                        \
    X, W_enc, b_enc, W_dec, b_tied, m_we, v_we, m_be, v_be, m_wd, v_wd, m_b, v_b, R, d, n,  \
        steps, adam, lambda, loss

template <bool CLOCKS>
__device__ __forceinline__ void persistent_body(PERSIST_PARAMS, unsigned long long *clocks) {
    extern __shared__ float sm[];
    if (d > PERSIST_MAX_ROW || n > PERSIST_MAX_ROW) return;  // the host never launches this
    const PhaseClocks<CLOCKS> clk(clocks, steps, PERSIST_PHASES);
    const unsigned s = blockIdx.x;
    const unsigned tid = threadIdx.x, nt = blockDim.x;
    const unsigned lane = tid & 31u, warp = tid >> 5, nwarps = nt >> 5;
    const unsigned ldwe = d + 1, ldwd = n + 1;
    float *We = sm;
    float *Wd = We + (size_t)n * ldwe;
    float *be = Wd + (size_t)d * ldwd;
    float *bb = be + n;
    float *xs = bb + d;
    float *xc = xs + (size_t)R * d;
    float *f = xc + (size_t)R * d;
    float *diff = f + (size_t)R * n;
    float *dpre = diff + (size_t)R * d;
    float *gbe = dpre + (size_t)R * n;
    float *red = gbe + n;

    const size_t we_off = (size_t)s * n * d, wd_off = (size_t)s * d * n;
    persist_load_params(W_enc, b_enc, W_dec, b_tied, We, ldwe, Wd, ldwd, be, bb, s, d, n, tid, nt);
    for (unsigned i = tid; i < R * d; i += nt) xs[i] = X[(size_t)s * R * d + i];
    __syncthreads();

    const float s1 = 2.0f / (float)((size_t)R * d);
    const float lam_r = lambda / (float)R;

    clk.loop_start();
    for (unsigned t = 1; t <= steps; ++t) {
        // 1. renormalise rows (warp per row)
        persist_renorm_all(We, ldwe, Wd, ldwd, d, n, warp, nwarps, lane);
        __syncthreads();
        clk.mark(t, 0);
        // 2a. centre
        for (unsigned i = tid; i < R * d; i += nt) xc[i] = xs[i] - bb[i % d];
        __syncthreads();
        clk.mark(t, 1);
        // 2b. encode
        for (unsigned i = tid; i < R * n; i += nt) {
            const unsigned r = i / n, j = i % n;
            const float *xr = xc + (size_t)r * d;
            const float *wr = We + (size_t)j * ldwe;
            float acc = 0.f;
            for (unsigned k = 0; k < d; ++k) acc = fmaf(xr[k], wr[k], acc);
            f[i] = fmaxf(acc + be[j], 0.f);
        }
        __syncthreads();
        clk.mark(t, 2);
        // 2c. decode residual
        for (unsigned i = tid; i < R * d; i += nt) {
            const unsigned r = i / d, k = i % d;
            const float *fr = f + (size_t)r * n;
            const float *wr = Wd + (size_t)k * ldwd;
            float acc = 0.f;
            for (unsigned j = 0; j < n; ++j) acc = fmaf(fr[j], wr[j], acc);
            diff[i] = (acc + bb[k]) - xs[i];
        }
        __syncthreads();
        clk.mark(t, 3);
        // 2d. loss (optional; uniform branch)
        if (loss != nullptr) {
            persist_loss_partials(diff, d, f, n, R, d, n, red, tid, nt, lane, warp);
            __syncthreads();
            if (tid == 0) persist_loss_store(red, nwarps, R, d, lambda, loss, s, steps, t);
        }
        // 3a. dpre = [f>0] (s1 diff W_dec + lambda/R)
        for (unsigned i = tid; i < R * n; i += nt) {
            const unsigned r = i / n, j = i % n;
            float out = 0.f;
            if (f[i] > 0.f) {
                const float *dr = diff + (size_t)r * d;
                float acc = 0.f;
                for (unsigned k = 0; k < d; ++k) acc = fmaf(dr[k], Wd[(size_t)k * ldwd + j], acc);
                out = s1 * acc + lam_r;
            }
            dpre[i] = out;
        }
        __syncthreads();
        clk.mark(t, 4);
        // 3b. g_b_enc
        for (unsigned j = tid; j < n; j += nt) {
            float acc = 0.f;
            for (unsigned r = 0; r < R; ++r) acc += dpre[(size_t)r * n + j];
            gbe[j] = acc;
        }
        __syncthreads();
        clk.mark(t, 5);
        const AdamK ad = adam_of(adam, t);
        // 3c. g_b and Adam on b (reads We before it is updated)
        persist_grad_b_adam(bb, diff, d, gbe, We, ldwe, R, d, n, s1, m_b, v_b, s, ad, tid, nt);
        __syncthreads();
        clk.mark(t, 6);
        // 4+5. W_enc rows, W_dec rows (warp per row, gradients and moments in registers),
        //      b_enc (thread per feature)
        for (unsigned row = warp; row < n + d; row += nwarps) {
            if (row < n) {
                const unsigned j = row;
                persist_row_update(We + (size_t)j * ldwe, d, dpre + j, n, xc, d, R, 1.0f,
                                   m_we + we_off + (size_t)j * d, v_we + we_off + (size_t)j * d,
                                   ad, lane);
            } else {
                const unsigned k = row - n;
                persist_row_update(Wd + (size_t)k * ldwd, n, diff + k, d, f, n, R, s1,
                                   m_wd + wd_off + (size_t)k * n, v_wd + wd_off + (size_t)k * n,
                                   ad, lane);
            }
        }
        for (unsigned j = tid; j < n; j += nt) {
            const size_t gi = (size_t)s * n + j;
            be[j] = adam_update(be[j], gbe[j], &m_be[gi], &v_be[gi], ad);
        }
        __syncthreads();
        clk.mark(t, 7);
    }
    persist_store_params(W_enc, b_enc, W_dec, b_tied, We, ldwe, Wd, ldwd, be, bb, s, d, n, tid, nt);
    clk.finish();
}

extern "C" __global__ void __launch_bounds__(512, 1) sae_train_persistent_f32(PERSIST_PARAMS) {
    persistent_body<false>(PERSIST_ARGS, nullptr);
}
// The twin with phase clocks: clocks [N][CLOCK_HEAD + steps * PERSIST_PHASES].
extern "C" __global__ void __launch_bounds__(512, 1)
sae_train_persistent_clocks_f32(PERSIST_PARAMS, unsigned long long *__restrict__ clocks) {
    persistent_body<true>(PERSIST_ARGS, clocks);
}

// ------------------------------------------------------------------------------------------
// (A2) sae_train_tiled_f32: path (A) with register tiling, the same arithmetic
// ------------------------------------------------------------------------------------------
// Why: (A) reads two shared-memory operands for every FMA, so an SM's shared-memory pipe
// (32 floats a clock) bounds it at about 40k wavefronts a step for the per-head z shape.
// Here each thread keeps several accumulators and every operand it loads feeds all of them:
//   * encode and dpre: thread (feature j, row group); per 4 inner steps it loads its 4 own
//     weights and, per row, one float4 broadcast of the row (TILED_RT rows);
//   * decode: thread (output k, row group), TILED_DEC_RT rows;
//   * weight rows: a warp updates TJ rows at once, so each B element it loads (xc or f)
//     feeds TJ gradients, and the TJ row coefficients arrive as one vector broadcast.
// It also runs fewer barriers a step (6 against 8): the renormalisation of step t+1 is
// applied by the warp that has just written the row at step t (its new values are in
// registers), and xc for step t+1 goes to the other half of a double buffer while step t's
// W_enc gradient still reads this half.
// Every output element is the same fmaf chain, in the same order, as in (A) and the CPU
// reference (accumulators start at 0; inner index ascending); only the interleaving changes.
//
// Phases of a step, each ended by __syncthreads; within a phase no array is both written
// and read by different threads (weight rows are written only by the warp that owns them):
//   P1 encode   reads xc (this step's half), We, be   writes f
//   P2 decode   reads f, Wd, bb, xs              writes diff
//   P3 dpre     reads diff, Wd, f                writes dpre, red (loss partials)
//   P4 g_b_enc  reads dpre, red                  writes gbe, loss
//   P5 g_b, b   reads diff, gbe, We              writes bb, m_b/v_b
//      W_dec    reads diff, f, own Wd rows       writes own Wd rows, m_wd/v_wd
//   P6 W_enc    reads dpre, xc (this step's half), own We rows   writes own We rows, m_we/v_we
//      b_enc    reads gbe                        writes be, m_be/v_be
//      next xc  reads xs, bb                     writes the other xc half
//
// Shared-memory layout (floats; every array starts at a multiple of 4, so float4 loads are
// aligned): ldx = round4(d), ldf = round4(n), r4(x) = round4(x)
//   We [n][d+1] | Wd [d][n+1] | be [n] | bb [d] | gbe [n] | xs [R][ldx] | xc [2][R][ldx]
//   | diff [R][ldx] | f [R][ldf] | dpre [R][ldf] | red [64]
// total = r4(n(d+1)) + r4(d(n+1)) + 2 r4(n) + r4(d) + 4R ldx + 2R ldf + 64
//   (tiled_smem_floats in launch.rs; d=64, n=200, R=10: 32,952 floats = 129 KB)
// Launch: grid (N,1,1), blockDim (512,1,1), dynamic smem as above. __launch_bounds__(512, 1):
// the shared memory allows one block per SM, so the compiler may use all 128 registers a
// thread (without the 1 it chose 64 and spilled for the untiled kernel).
#define TILED_RT 5
#define TILED_DEC_RT 2

__device__ __forceinline__ unsigned round4u(unsigned x) { return (x + 3u) & ~3u; }

// acc[i] = sum_{k<K} A[(r0+i)*lda + k] * B[k*bs] (k ascending, from 0), i < RT.
// Rows past R read row R-1 (their sums are discarded by the caller). A rows are 16-byte
// aligned (lda % 4 == 0).
template <int RT>
__device__ __forceinline__ void tiled_rows_dot(const float *A, unsigned lda, unsigned r0,
                                               unsigned R, const float *B, unsigned bs,
                                               unsigned K, float (&acc)[RT]) {
    const float *ar[RT];
#pragma unroll
    for (int i = 0; i < RT; ++i) {
        acc[i] = 0.f;
        ar[i] = A + (size_t)min(r0 + (unsigned)i, R - 1u) * lda;
    }
    unsigned k = 0;
    for (; k + 4u <= K; k += 4u) {
        const float b0 = B[(size_t)k * bs], b1 = B[(size_t)(k + 1u) * bs];
        const float b2 = B[(size_t)(k + 2u) * bs], b3 = B[(size_t)(k + 3u) * bs];
#pragma unroll
        for (int i = 0; i < RT; ++i) {
            const float4 a = *reinterpret_cast<const float4 *>(ar[i] + k);
            acc[i] = fmaf(a.x, b0, acc[i]);
            acc[i] = fmaf(a.y, b1, acc[i]);
            acc[i] = fmaf(a.z, b2, acc[i]);
            acc[i] = fmaf(a.w, b3, acc[i]);
        }
    }
    for (; k < K; ++k) {
        const float b = B[(size_t)k * bs];
#pragma unroll
        for (int i = 0; i < RT; ++i) acc[i] = fmaf(ar[i][k], b, acc[i]);
    }
}

// A warp updates TJ consecutive unit-norm weight rows row0.. of W (row stride ldw, length
// len <= 32*Q, rows_total rows): for each row j and element e (lane + 32q)
//   g = scale * sum_r A[r*lda + j] * B[r*ldb + e]   (r ascending, fmaf chain from 0)
// then radial removal, Adam (moments m, v: global, [rows_total][len]) and, when renorm,
// the next step's renormalisation w / max(||w||, 1e-12) of the new row. Exactly
// persist_row_update followed by path (A)'s renorm loop, TJ rows at a time.
// A's rows are 16-byte aligned and row0 % TJ == 0, so the TJ coefficients of one r are one
// vector load (all lanes the same address: a broadcast).
template <int TJ, int Q>
__device__ __forceinline__ void tiled_rows_update(float *W, unsigned ldw, unsigned row0,
                                                  unsigned rows_total, unsigned len,
                                                  const float *A, unsigned lda, const float *B,
                                                  unsigned ldb, unsigned R, float scale,
                                                  float *m, float *v, const AdamK &ad,
                                                  bool renorm, unsigned lane) {
    float g[TJ][Q], mq[TJ][Q], vq[TJ][Q];
#pragma unroll
    for (int jj = 0; jj < TJ; ++jj)
#pragma unroll
        for (int q = 0; q < Q; ++q) {
            const unsigned e = lane + 32u * q, row = row0 + jj;
            g[jj][q] = 0.f;
            mq[jj][q] = 0.f;
            vq[jj][q] = 0.f;
            if (row < rows_total && e < len) {
                mq[jj][q] = m[(size_t)row * len + e];
                vq[jj][q] = v[(size_t)row * len + e];
            }
        }
    for (unsigned r = 0; r < R; ++r) {
        float a[TJ];
        const float *ap = A + (size_t)r * lda + row0;
        if constexpr (TJ == 4) {
            const float4 t = *reinterpret_cast<const float4 *>(ap);
            a[0] = t.x; a[1] = t.y; a[2] = t.z; a[3] = t.w;
        } else if constexpr (TJ == 2) {
            const float2 t = *reinterpret_cast<const float2 *>(ap);
            a[0] = t.x; a[1] = t.y;
        } else {
            a[0] = ap[0];
        }
        const float *bp = B + (size_t)r * ldb;
#pragma unroll
        for (int q = 0; q < Q; ++q) {
            const unsigned e = lane + 32u * q;
            const float b = e < len ? bp[e] : 0.f;
#pragma unroll
            for (int jj = 0; jj < TJ; ++jj) g[jj][q] = fmaf(a[jj], b, g[jj][q]);
        }
    }
    // The TJ rows' warp reductions run interleaved (warp_sums): 3 rounds of TJ- or
    // 2TJ-wide independent shuffles instead of 3 TJ dependent warp_sum calls, so a warp waits
    // on one shuffle latency per butterfly level, not one per row. Each value goes through
    // warp_sum's butterfly unchanged, so every result is bit-identical to one row at a time.
    // Rows past rows_total (the last task of a weight) reduce zeros and write nothing.
    float dot[TJ], ss[TJ];
#pragma unroll
    for (int jj = 0; jj < TJ; ++jj) {
        const unsigned row = row0 + jj;
        const float *wr = W + (size_t)min(row, rows_total - 1u) * ldw;
        dot[jj] = 0.f;
        ss[jj] = 0.f;
#pragma unroll
        for (int q = 0; q < Q; ++q) {
            const unsigned e = lane + 32u * q;
            if (row < rows_total && e < len) {
                g[jj][q] = scale * g[jj][q];
                dot[jj] += g[jj][q] * wr[e];
                ss[jj] += wr[e] * wr[e];
            }
        }
    }
    warp_sums<TJ>(dot, ss);
    float ss2[TJ];
#pragma unroll
    for (int jj = 0; jj < TJ; ++jj) {
        const unsigned row = row0 + jj;
        ss2[jj] = 0.f;
        if (row >= rows_total) continue;  // warp-uniform
        const float *wr = W + (size_t)row * ldw;
        const float nrm = sqrtf(ss[jj]);
#pragma unroll
        for (int q = 0; q < Q; ++q) {
            const unsigned e = lane + 32u * q;
            if (e < len) {
                const float w = wr[e];
                const float gr = radial(g[jj][q], dot[jj], w, nrm);
                const float wn = adam_update(w, gr, &mq[jj][q], &vq[jj][q], ad);
                m[(size_t)row * len + e] = mq[jj][q];
                v[(size_t)row * len + e] = vq[jj][q];
                g[jj][q] = wn;  // the register now holds the new weight
                ss2[jj] += wn * wn;
            }
        }
    }
    if (renorm) warp_sums<TJ>(ss2);  // block-uniform
#pragma unroll
    for (int jj = 0; jj < TJ; ++jj) {
        const unsigned row = row0 + jj;
        if (row >= rows_total) break;  // warp-uniform
        float *wr = W + (size_t)row * ldw;
        if (renorm) {  // block-uniform
            const float nrm2 = fmaxf(sqrtf(ss2[jj]), 1e-12f);
#pragma unroll
            for (int q = 0; q < Q; ++q) {
                const unsigned e = lane + 32u * q;
                if (e < len) wr[e] = g[jj][q] / nrm2;
            }
        } else {
#pragma unroll
            for (int q = 0; q < Q; ++q) {
                const unsigned e = lane + 32u * q;
                if (e < len) wr[e] = g[jj][q];
            }
        }
    }
}

// All rows of one weight, TJ rows per warp task, tasks dealt to warps round-robin.
template <int TJ, int Q>
__device__ __forceinline__ void tiled_weight_update(float *W, unsigned ldw, unsigned rows_total,
                                                    unsigned len, const float *A, unsigned lda,
                                                    const float *B, unsigned ldb, unsigned R,
                                                    float scale, float *m, float *v,
                                                    const AdamK &ad, bool renorm,
                                                    unsigned warp, unsigned nwarps,
                                                    unsigned lane) {
    const unsigned tasks = (rows_total + TJ - 1u) / TJ;
    for (unsigned t = warp; t < tasks; t += nwarps)
        tiled_rows_update<TJ, Q>(W, ldw, t * TJ, rows_total, len, A, lda, B, ldb, R, scale, m,
                                 v, ad, renorm, lane);
}

// Row length decides the tile: short rows take 4 at a time, long rows 2 (register budget
// of __launch_bounds__(512, 1): 128 a thread).
__device__ __forceinline__ void tiled_weight_dispatch(float *W, unsigned ldw, unsigned rows_total,
                                                      unsigned len, const float *A, unsigned lda,
                                                      const float *B, unsigned ldb, unsigned R,
                                                      float scale, float *m, float *v,
                                                      const AdamK &ad, bool renorm,
                                                      unsigned warp, unsigned nwarps,
                                                      unsigned lane) {
    if (len <= 64)
        tiled_weight_update<4, 2>(W, ldw, rows_total, len, A, lda, B, ldb, R, scale, m, v, ad,
                                  renorm, warp, nwarps, lane);
    else if (len <= 128)
        tiled_weight_update<2, 4>(W, ldw, rows_total, len, A, lda, B, ldb, R, scale, m, v, ad,
                                  renorm, warp, nwarps, lane);
    else
        tiled_weight_update<2, 8>(W, ldw, rows_total, len, A, lda, B, ldb, R, scale, m, v, ad,
                                  renorm, warp, nwarps, lane);
}

template <bool CLOCKS>
__device__ __forceinline__ void tiled_body(PERSIST_PARAMS, unsigned long long *clocks) {
    extern __shared__ float4 sm4[];  // float4: 16-byte aligned base
    float *sm = reinterpret_cast<float *>(sm4);
    if (d > PERSIST_MAX_ROW || n > PERSIST_MAX_ROW || R == 0) return;  // the host never launches this
    const PhaseClocks<CLOCKS> clk(clocks, steps, TILED_PHASES);
    const unsigned s = blockIdx.x;
    const unsigned tid = threadIdx.x, nt = blockDim.x;
    const unsigned lane = tid & 31u, warp = tid >> 5, nwarps = nt >> 5;
    const unsigned ldwe = d + 1, ldwd = n + 1, ldx = round4u(d), ldf = round4u(n);
    float *We = sm;
    float *Wd = We + round4u(n * ldwe);
    float *be = Wd + round4u(d * ldwd);
    float *bb = be + round4u(n);
    float *gbe = bb + round4u(d);
    float *xs = gbe + round4u(n);
    float *xcb = xs + (size_t)R * ldx;  // two halves of R*ldx
    float *diff = xcb + 2 * (size_t)R * ldx;
    float *f = diff + (size_t)R * ldx;
    float *dpre = f + (size_t)R * ldf;
    float *red = dpre + (size_t)R * ldf;

    const size_t we_off = (size_t)s * n * d, wd_off = (size_t)s * d * n;
    persist_load_params(W_enc, b_enc, W_dec, b_tied, We, ldwe, Wd, ldwd, be, bb, s, d, n, tid, nt);
    // Row padding is read by the vector loads but never used: keep it finite.
    for (unsigned i = tid; i < R * ldf; i += nt) { f[i] = 0.f; dpre[i] = 0.f; }
    for (unsigned i = tid; i < 3 * R * ldx; i += nt) xcb[i] = 0.f;  // xc halves, then diff
    for (unsigned i = tid; i < R * d; i += nt) xs[(i / d) * ldx + i % d] = X[(size_t)s * R * d + i];
    __syncthreads();
    // step 1's renormalisation (later steps get theirs from the row updates)
    persist_renorm_all(We, ldwe, Wd, ldwd, d, n, warp, nwarps, lane);
    for (unsigned i = tid; i < R * d; i += nt) {
        const unsigned r = i / d, k = i % d;
        xcb[r * ldx + k] = xs[r * ldx + k] - bb[k];
    }
    __syncthreads();

    const float s1 = 2.0f / (float)((size_t)R * d);
    const float lam_r = lambda / (float)R;
    const unsigned gn = nt / n, gd = nt / d;  // row groups (>= 2: n, d <= 256)

    clk.loop_start();
    for (unsigned t = 1; t <= steps; ++t) {
        float *xc = xcb + (size_t)((t - 1u) & 1u) * R * ldx;
        float *xc_next = xcb + (size_t)(t & 1u) * R * ldx;
        // P1. encode: f = relu(xc We^T + be)
        if (tid < gn * n) {
            const unsigned j = tid % n, grp = tid / n;
            for (unsigned r0 = grp * TILED_RT; r0 < R; r0 += gn * TILED_RT) {
                float acc[TILED_RT];
                tiled_rows_dot<TILED_RT>(xc, ldx, r0, R, We + (size_t)j * ldwe, 1, d, acc);
#pragma unroll
                for (int i = 0; i < TILED_RT; ++i)
                    if (r0 + i < R) f[(size_t)(r0 + i) * ldf + j] = fmaxf(acc[i] + be[j], 0.f);
            }
        }
        __syncthreads();
        clk.mark(t, 0);
        // P2. decode residual: diff = f Wd^T + bb - xs
        if (tid < gd * d) {
            const unsigned k = tid % d, grp = tid / d;
            for (unsigned r0 = grp * TILED_DEC_RT; r0 < R; r0 += gd * TILED_DEC_RT) {
                float acc[TILED_DEC_RT];
                tiled_rows_dot<TILED_DEC_RT>(f, ldf, r0, R, Wd + (size_t)k * ldwd, 1, n, acc);
#pragma unroll
                for (int i = 0; i < TILED_DEC_RT; ++i)
                    if (r0 + i < R) {
                        const size_t xi = (size_t)(r0 + i) * ldx + k;
                        diff[xi] = (acc[i] + bb[k]) - xs[xi];
                    }
            }
        }
        __syncthreads();
        clk.mark(t, 1);
        // P3. dpre = [f>0] (s1 diff Wd + lambda/R); loss partials (uniform branch)
        if (tid < gn * n) {
            const unsigned j = tid % n, grp = tid / n;
            for (unsigned r0 = grp * TILED_RT; r0 < R; r0 += gn * TILED_RT) {
                float acc[TILED_RT];
                tiled_rows_dot<TILED_RT>(diff, ldx, r0, R, Wd + j, ldwd, d, acc);
#pragma unroll
                for (int i = 0; i < TILED_RT; ++i)
                    if (r0 + i < R) {
                        const size_t fi = (size_t)(r0 + i) * ldf + j;
                        dpre[fi] = f[fi] > 0.f ? s1 * acc[i] + lam_r : 0.f;
                    }
            }
        }
        if (loss != nullptr)
            persist_loss_partials(diff, ldx, f, ldf, R, d, n, red, tid, nt, lane, warp);
        __syncthreads();
        clk.mark(t, 2);
        // P4. g_b_enc = colsum(dpre); the loss of this step
        for (unsigned j = tid; j < n; j += nt) {
            float acc = 0.f;
            for (unsigned r = 0; r < R; ++r) acc += dpre[(size_t)r * ldf + j];
            gbe[j] = acc;
        }
        if (loss != nullptr && tid == 0)
            persist_loss_store(red, nwarps, R, d, lambda, loss, s, steps, t);
        __syncthreads();
        clk.mark(t, 3);
        const AdamK ad = adam_of(adam, t);
        const bool renorm = t < steps;  // the stored params are those after the last Adam step
        // P5. g_b and Adam on b (reads We before P6 updates it), beside the W_dec rows
        persist_grad_b_adam(bb, diff, ldx, gbe, We, ldwe, R, d, n, s1, m_b, v_b, s, ad, tid, nt);
        // W_dec row k: g = s1 * sum_r diff[r][k] f[r][e]; the warps are dealt from the last
        // one, so the first warps (busy with g_b above) take the fewest rows.
        tiled_weight_dispatch(Wd, ldwd, d, n, diff, ldx, f, ldf, R, s1, m_wd + wd_off,
                              v_wd + wd_off, ad, renorm, nwarps - 1u - warp, nwarps, lane);
        __syncthreads();
        clk.mark(t, 4);
        // P6. W_enc rows (g = sum_r dpre[r][j] xc[r][e]), b_enc, and xc of the next step
        tiled_weight_dispatch(We, ldwe, n, d, dpre, ldf, xc, ldx, R, 1.0f, m_we + we_off,
                              v_we + we_off, ad, renorm, warp, nwarps, lane);
        for (unsigned j = tid; j < n; j += nt) {
            const size_t gi = (size_t)s * n + j;
            be[j] = adam_update(be[j], gbe[j], &m_be[gi], &v_be[gi], ad);
        }
        if (renorm)
            for (unsigned i = tid; i < R * d; i += nt) {
                const unsigned r = i / d, k = i % d;
                xc_next[r * ldx + k] = xs[r * ldx + k] - bb[k];
            }
        __syncthreads();
        clk.mark(t, 5);
    }
    persist_store_params(W_enc, b_enc, W_dec, b_tied, We, ldwe, Wd, ldwd, be, bb, s, d, n, tid, nt);
    clk.finish();
}

extern "C" __global__ void __launch_bounds__(512, 1) sae_train_tiled_f32(PERSIST_PARAMS) {
    tiled_body<false>(PERSIST_ARGS, nullptr);
}
// The twin with phase clocks: clocks [N][CLOCK_HEAD + steps * TILED_PHASES].
extern "C" __global__ void __launch_bounds__(512, 1)
sae_train_tiled_clocks_f32(PERSIST_PARAMS, unsigned long long *__restrict__ clocks) {
    tiled_body<true>(PERSIST_ARGS, clocks);
}

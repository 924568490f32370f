// hook.cu: fused per-head hook reduction (and optional W_O projection).
//
// hook_reduce_f32(z, mask, B, P, H, dh, mode, w_o, dm, out)
//   z     [B, P, H, dh] f32 row-major (per-position per-head attention output, "hook_z")
//   mask  [B, P] u8: nonzero = real token (padding may be left or right, or holes)
//   mode  0 = mean over the real positions (sum in position order, then / count)
//         1 = last real position (highest p with mask != 0)
//         A row with no real position gives zeros.
//   w_o   [H, dh, dm] f32 (per-head W_O) or NULL (0): without it out is [B, H, dh];
//         with it out[b,h,:] = reduce(z[b,:,h,:]) @ w_o[h]  -> [B, H, dm]. This equals the
//         reduction of the per-position head results z·W_O (linearity), exact up to rounding.
//   Launch: grid (ceil(B/HOOK_BT), H, 1), blockDim (256,1,1), dynamic shared memory
//   HOOK_BT * dh * 4 bytes. Each block handles HOOK_BT = 16 batch rows of one head, so every
//   W_O[h] element is read once per 16 batch rows (W_O for GPT-2 small is 28 MB: L2 resident).
#include <cuda_runtime.h>

#define HOOK_BT 16

extern "C" __global__ void hook_reduce_f32(const float *__restrict__ z,
                                           const unsigned char *__restrict__ mask, unsigned B,
                                           unsigned P, unsigned H, unsigned dh, unsigned mode,
                                           const float *__restrict__ w_o, unsigned dm,
                                           float *__restrict__ out) {
    extern __shared__ float zs[];  // [HOOK_BT][dh]
    const unsigned b0 = blockIdx.x * HOOK_BT;
    const unsigned h = blockIdx.y;
    const unsigned nb = min((unsigned)HOOK_BT, B - b0);
    // 1. reduce over positions: one thread per (bb, k)
    for (unsigned i = threadIdx.x; i < nb * dh; i += blockDim.x) {
        const unsigned bb = i / dh, k = i % dh, b = b0 + bb;
        const unsigned char *m = mask + (size_t)b * P;
        float acc = 0.f;
        if (mode == 0) {
            unsigned cnt = 0;
            for (unsigned p = 0; p < P; ++p) {
                if (m[p]) {
                    acc += z[(((size_t)b * P + p) * H + h) * dh + k];
                    ++cnt;
                }
            }
            acc = cnt ? acc / (float)cnt : 0.f;
        } else {
            for (unsigned p = P; p-- > 0;) {
                if (m[p]) {
                    acc = z[(((size_t)b * P + p) * H + h) * dh + k];
                    break;
                }
            }
        }
        zs[bb * dh + k] = acc;
    }
    __syncthreads();
    if (w_o == nullptr) {
        for (unsigned i = threadIdx.x; i < nb * dh; i += blockDim.x) {
            const unsigned bb = i / dh, k = i % dh;
            out[((size_t)(b0 + bb) * H + h) * dh + k] = zs[bb * dh + k];
        }
        return;
    }
    // 2. project: thread per output column j, HOOK_BT accumulators
    const float *w = w_o + (size_t)h * dh * dm;
    for (unsigned j = threadIdx.x; j < dm; j += blockDim.x) {
        float acc[HOOK_BT];
#pragma unroll
        for (int bb = 0; bb < HOOK_BT; ++bb) acc[bb] = 0.f;
        for (unsigned k = 0; k < dh; ++k) {
            const float wv = w[(size_t)k * dm + j];
#pragma unroll
            for (int bb = 0; bb < HOOK_BT; ++bb) acc[bb] += zs[(bb < (int)nb ? bb : 0) * dh + k] * wv;
        }
#pragma unroll
        for (int bb = 0; bb < HOOK_BT; ++bb)
            if (bb < (int)nb) out[((size_t)(b0 + bb) * H + h) * dm + j] = acc[bb];
    }
}

// codes.cu: per-row argmax ("codes") over a row-major [rows, k] f32 matrix.
//
// argmax_rows_f32(x[rows,k], rows, k, group, os_g, os_r, out u32)
//   out[(row / group) * os_g + (row % group) * os_r] = argmax of row `row`.
//   Plain [rows] output: group = rows, os_g = 0, os_r = 1. Transposed output, e.g. per-head
//   SAE activations [H, E, n] -> codes [E, H]: group = E, os_g = 1, os_r = H.
//   Launch: one warp per row; blockDim = (256,1,1) (8 rows per block),
//   grid = (ceil(rows/8), 1, 1). Any blockDim that is a multiple of 32 works.
//   Ties resolve to the LOWEST column index (numpy argmax); an all-zero row gives 0.
//   NaN counts as the maximum (the first NaN wins), like numpy.argmax and crate::codes.
#include <cuda_runtime.h>
#include <math_constants.h>

namespace {

// NumPy order: any NaN beats every number (first NaN wins); otherwise larger value, then
// lower index.
__device__ __forceinline__ bool better(float v, unsigned i, float bv, unsigned bi) {
    const bool vn = isnan(v), bn = isnan(bv);
    if (vn != bn) return vn;
    if (vn) return i < bi;
    return v > bv || (v == bv && i < bi);
}

__device__ __forceinline__ void warp_argmax(float &v, unsigned &i) {
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) {
        float ov = __shfl_down_sync(0xffffffffu, v, off);
        unsigned oi = __shfl_down_sync(0xffffffffu, i, off);
        if (better(ov, oi, v, i)) {
            v = ov;
            i = oi;
        }
    }
}

}  // namespace

extern "C" __global__ void argmax_rows_f32(const float *__restrict__ x, unsigned rows,
                                           unsigned k, unsigned group, unsigned os_g,
                                           unsigned os_r, unsigned *__restrict__ out) {
    const unsigned warps_per_block = blockDim.x >> 5;
    const unsigned lane = threadIdx.x & 31u;
    const unsigned row = blockIdx.x * warps_per_block + (threadIdx.x >> 5);
    if (row >= rows) return;  // whole warp exits together
    const float *r = x + (size_t)row * k;
    float bv = -CUDART_INF_F;
    unsigned bi = 0xffffffffu;
    for (unsigned j = lane; j < k; j += 32) {
        float v = r[j];
        if (better(v, j, bv, bi)) {
            bv = v;
            bi = j;
        }
    }
    warp_argmax(bv, bi);
    if (lane == 0) {
        const size_t o = (size_t)(row / group) * os_g + (size_t)(row % group) * os_r;
        out[o] = (bi == 0xffffffffu) ? 0u : bi;
    }
}

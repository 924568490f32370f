// overlap.cu: code-set overlap counts between positive and negative examples.
//
// Inputs shared by all kernels:
//   codes  [examples, heads] u32, row-major (codes[e*heads + h] = code of head h on example e)
//   is_pos [examples] u8 (nonzero = positive example)
//   n_codes: codes must be < n_codes; out-of-range codes are skipped and counted in *bad.
//
// Node variant (two launches):
//   node_bitsets_u32(codes, is_pos, E, H, n_codes, words, pos_bits[H*words], neg_bits[H*words], bad)
//     Bitsets must be zeroed first. words = ceil(n_codes/32); bit c of head h lives in
//     word h*words + c/32, bit c%32. Launch: one thread per (e,h), 1-D grid over E*H,
//     blockDim 256, grid ceil(E*H/256).
//   node_popcount_u32(pos_bits, neg_bits, H, words, p_not_n[H], n_not_p[H])
//     p_not_n[h] = popcount(P_h & ~N_h), n_not_p[h] = popcount(N_h & ~P_h).
//     Launch: one block per head, grid (H,1,1), blockDim 128 (multiple of 32, <= 1024).
//
// Edge variant: U[h1,h2] = #{(c1,c2) seen on some positive example e with codes (c1,c2) at
// heads (h1,h2), and on no negative example}. U is symmetric with zero diagonal; out must be
// zeroed first (the diagonal is never written).
//   edge_bitset_u32(codes, is_pos, E, H, n_codes, out[H*H], bad)
//     One block per unordered pair h1<h2: grid (H, H, 1) with blockIdx.x = h2, blockIdx.y = h1
//     (blocks with h2 <= h1 return at once). Two n_codes^2-bit bitsets live in DYNAMIC shared
//     memory: shared bytes = 2 * ceil(n_codes^2/32) * 4 (n_codes = 200 -> 10 000 B). No global
//     scratch at all, so this scales to any head count (GPT-2-XL: 1200 heads, 720k pairs).
//     blockDim 256.
//   edge_list_u32(codes, is_pos, E, H, n_codes, out[H*H], bad)
//     Alternative for large n_codes where the bitsets do not fit in shared memory: the block
//     stores the E pair keys (c1*n_codes + c2) with their labels in dynamic shared memory
//     (shared bytes = E * 8) and counts keys k of positives such that k is the first positive
//     occurrence and no negative has k: O(E^2) per pair. Same grid and block as above.
#include <cuda_runtime.h>
#include <stdint.h>

namespace {

__device__ __forceinline__ unsigned block_sum(unsigned v, unsigned *scratch) {
    // scratch: >= 32 unsigned in shared memory
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffffu, v, off);
    const unsigned lane = threadIdx.x & 31u, warp = threadIdx.x >> 5;
    __syncthreads();  // scratch may be in use by a previous call
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    unsigned total = 0;
    if (warp == 0) {
        const unsigned nw = (blockDim.x + 31u) >> 5;
        total = lane < nw ? scratch[lane] : 0u;
#pragma unroll
        for (int off = 16; off > 0; off >>= 1) total += __shfl_down_sync(0xffffffffu, total, off);
    }
    return total;  // valid in thread 0
}

}  // namespace

extern "C" __global__ void node_bitsets_u32(const unsigned *__restrict__ codes,
                                            const unsigned char *__restrict__ is_pos,
                                            unsigned E, unsigned H, unsigned n_codes,
                                            unsigned words, unsigned *__restrict__ pos_bits,
                                            unsigned *__restrict__ neg_bits,
                                            unsigned *__restrict__ bad) {
    const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)E * H) return;
    const unsigned e = (unsigned)(i / H), h = (unsigned)(i % H);
    const unsigned c = codes[i];
    if (c >= n_codes) {
        atomicAdd(bad, 1u);
        return;
    }
    unsigned *bits = is_pos[e] ? pos_bits : neg_bits;
    atomicOr(&bits[(size_t)h * words + (c >> 5)], 1u << (c & 31u));
}

extern "C" __global__ void node_popcount_u32(const unsigned *__restrict__ pos_bits,
                                             const unsigned *__restrict__ neg_bits, unsigned H,
                                             unsigned words, unsigned *__restrict__ p_not_n,
                                             unsigned *__restrict__ n_not_p) {
    __shared__ unsigned scratch[32];
    const unsigned h = blockIdx.x;
    if (h >= H) return;
    const unsigned *P = pos_bits + (size_t)h * words;
    const unsigned *N = neg_bits + (size_t)h * words;
    unsigned a = 0, b = 0;
    for (unsigned w = threadIdx.x; w < words; w += blockDim.x) {
        a += __popc(P[w] & ~N[w]);
        b += __popc(N[w] & ~P[w]);
    }
    a = block_sum(a, scratch);
    if (threadIdx.x == 0) p_not_n[h] = a;
    b = block_sum(b, scratch);
    if (threadIdx.x == 0) n_not_p[h] = b;
}

extern "C" __global__ void edge_bitset_u32(const unsigned *__restrict__ codes,
                                           const unsigned char *__restrict__ is_pos,
                                           unsigned E, unsigned H, unsigned n_codes,
                                           unsigned *__restrict__ out, unsigned *__restrict__ bad) {
    extern __shared__ unsigned smem[];
    __shared__ unsigned scratch[32];
    const unsigned h2 = blockIdx.x, h1 = blockIdx.y;
    if (h1 >= h2 || h2 >= H) return;  // uniform per block
    const unsigned long long nbits = (unsigned long long)n_codes * n_codes;
    const unsigned words = (unsigned)((nbits + 31ull) >> 5);
    unsigned *P = smem;
    unsigned *N = smem + words;
    for (unsigned w = threadIdx.x; w < 2 * words; w += blockDim.x) smem[w] = 0u;
    __syncthreads();
    for (unsigned e = threadIdx.x; e < E; e += blockDim.x) {
        const unsigned c1 = codes[(size_t)e * H + h1];
        const unsigned c2 = codes[(size_t)e * H + h2];
        if (c1 >= n_codes || c2 >= n_codes) {
            atomicAdd(bad, 1u);
            continue;
        }
        const unsigned bit = c1 * n_codes + c2;
        atomicOr(&(is_pos[e] ? P : N)[bit >> 5], 1u << (bit & 31u));
    }
    __syncthreads();
    unsigned cnt = 0;
    for (unsigned w = threadIdx.x; w < words; w += blockDim.x) cnt += __popc(P[w] & ~N[w]);
    cnt = block_sum(cnt, scratch);
    if (threadIdx.x == 0) {
        out[(size_t)h1 * H + h2] = cnt;
        out[(size_t)h2 * H + h1] = cnt;
    }
}

extern "C" __global__ void edge_list_u32(const unsigned *__restrict__ codes,
                                         const unsigned char *__restrict__ is_pos, unsigned E,
                                         unsigned H, unsigned n_codes,
                                         unsigned *__restrict__ out, unsigned *__restrict__ bad) {
    extern __shared__ unsigned long long keys[];  // E entries: key*2 + is_pos (or ~0 = invalid)
    __shared__ unsigned scratch[32];
    const unsigned h2 = blockIdx.x, h1 = blockIdx.y;
    if (h1 >= h2 || h2 >= H) return;
    for (unsigned e = threadIdx.x; e < E; e += blockDim.x) {
        const unsigned c1 = codes[(size_t)e * H + h1];
        const unsigned c2 = codes[(size_t)e * H + h2];
        unsigned long long k = ~0ull;
        if (c1 < n_codes && c2 < n_codes) {
            k = (((unsigned long long)c1 * n_codes + c2) << 1) | (is_pos[e] ? 1ull : 0ull);
        } else {
            atomicAdd(bad, 1u);
        }
        keys[e] = k;
    }
    __syncthreads();
    unsigned cnt = 0;
    for (unsigned e = threadIdx.x; e < E; e += blockDim.x) {
        const unsigned long long k = keys[e];
        if (k == ~0ull || !(k & 1ull)) continue;  // only positives count
        const unsigned long long key = k >> 1;
        bool keep = true;
        for (unsigned f = 0; f < E && keep; ++f) {
            const unsigned long long o = keys[f];
            if (o == ~0ull || (o >> 1) != key) continue;
            if (!(o & 1ull)) keep = false;        // seen on a negative
            else if (f < e) keep = false;         // not the first positive occurrence
        }
        cnt += keep ? 1u : 0u;
    }
    cnt = block_sum(cnt, scratch);
    if (threadIdx.x == 0) {
        out[(size_t)h1 * H + h2] = cnt;
        out[(size_t)h2 * H + h1] = cnt;
    }
}

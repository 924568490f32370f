// util.cu: device-side helpers for the benchmark (no host RNG / big uploads needed).
//
// fill_uniform_f32(out[len], len, seed, lo, hi): out[i] = lo + (hi-lo) * u_i, u_i in [0,1)
//   from splitmix64(seed, i) (deterministic, independent of the launch shape).
//   Launch: grid-stride loop, blockDim 256, any grid (e.g. min(ceil(len/256), 65535)).
#include <cuda_runtime.h>

__device__ __forceinline__ unsigned long long splitmix64(unsigned long long x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

extern "C" __global__ void fill_uniform_f32(float *__restrict__ out, unsigned long long len,
                                            unsigned long long seed, float lo, float hi) {
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < len;
         i += (unsigned long long)gridDim.x * blockDim.x) {
        const unsigned long long h = splitmix64(seed ^ (i * 0xD1B54A32D192ED03ull));
        const float u = (float)(h >> 40) * (1.0f / 16777216.0f);
        out[i] = lo + (hi - lo) * u;
    }
}

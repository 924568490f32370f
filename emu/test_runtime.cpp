// headcode-emu's own test: the fiber runtime runs correct kernels correctly and reports
// the faults a GPU would hang or misbehave on. Built and run by emu/build.sh --test.
#include <cstdio>
#include <string>
#include <vector>

#include "emu.h"

namespace {

// Block-wide sum through shared memory and warp shuffles (needs every barrier).
void block_sum(const float *x, float *out, unsigned n) {
    __shared__ float part[32];
    const unsigned t = threadIdx.x, lane = t & 31u, warp = t >> 5;
    float v = 0.f;
    for (unsigned i = t; i < n; i += blockDim.x) v += x[blockIdx.x * n + i];
    for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
    if (lane == 0) part[warp] = v;
    __syncthreads();
    if (t == 0) {
        float s = 0.f;
        for (unsigned w = 0; w < blockDim.x / 32; ++w) s += part[w];
        out[blockIdx.x] = s;
    }
}

// Reverses a block's values through dynamic shared memory: wrong without the barrier.
void reverse(const float *x, float *y) {
    float *buf = static_cast<float *>(emu::dyn_smem());
    const unsigned t = threadIdx.x, n = blockDim.x;
    buf[t] = x[blockIdx.x * n + t];
    __syncthreads();
    y[blockIdx.x * n + t] = buf[n - 1 - t];
}

void reverse_no_barrier(const float *x, float *y) {
    float *buf = static_cast<float *>(emu::dyn_smem());
    const unsigned t = threadIdx.x, n = blockDim.x;
    buf[t] = x[blockIdx.x * n + t];
    y[blockIdx.x * n + t] = buf[n - 1 - t];
}

// Half a warp shuffles while the other half waits at the barrier: the full-mask shuffle
// can never complete (undefined behaviour, a hang on a GPU). Threads that exit count as
// arrived at a barrier, as on Volta and later GPUs.
void divergent_shuffle(float *y) {
    float v = 1.f;
    if (threadIdx.x < 16) v = __shfl_xor_sync(0xffffffffu, v, 1);
    else __syncthreads();
    y[threadIdx.x] = v;
}

// Lanes 16-31 exit, lanes 0-15 read from them.
void shuffle_from_exited(float *y) {
    if (threadIdx.x >= 16) return;
    y[threadIdx.x] = __shfl_down_sync(0xffffffffu, 1.f, 16);
}

int failures = 0;
void expect(bool ok, const char *what) {
    std::printf("%s %s\n", ok ? "ok  " : "FAIL", what);
    failures += !ok;
}

}  // namespace

EMU_REGISTER(block_sum, 0);
EMU_REGISTER(reverse, 0);
EMU_REGISTER(reverse_no_barrier, 0);
EMU_REGISTER(divergent_shuffle, 0);
EMU_REGISTER(shuffle_from_exited, 0);

int main() {
    auto launch = [](const char *name, std::vector<void *> args, dim3 g, dim3 b, std::size_t smem) {
        const emu::Kernel *k = emu::find_kernel(name);
        if (!k) return std::string("no kernel ") + name;
        return emu::run_grid(*k, k->bind(args.data()), g, b, smem);
    };
    const unsigned blocks = 3, n = 1000;
    std::vector<float> x(blocks * n), sums(blocks);
    for (unsigned i = 0; i < x.size(); ++i) x[i] = (float)(i % 7) - 3.f;
    const float *xp = x.data();
    float *sp = sums.data();
    unsigned nn = n;
    std::string err = launch("block_sum", {&xp, &sp, &nn}, dim3{blocks, 1, 1}, dim3{256, 1, 1}, 0);
    bool ok = err.empty();
    for (unsigned b = 0; b < blocks; ++b) {
        float want = 0.f;
        for (unsigned i = 0; i < n; ++i) want += x[b * n + i];
        ok = ok && sums[b] == want;
    }
    expect(ok, "block sum (shared memory, barrier, xor shuffles) is exact");

    std::vector<float> y(2 * 128);
    float *yp = y.data();
    err = launch("reverse", {&xp, &yp}, dim3{2, 1, 1}, dim3{128, 1, 1}, 128 * 4);
    ok = err.empty();
    for (unsigned b = 0; b < 2; ++b)
        for (unsigned t = 0; t < 128; ++t) ok = ok && y[b * 128 + t] == x[b * 128 + 127 - t];
    expect(ok, "block reverse through dynamic shared memory");

    err = launch("reverse_no_barrier", {&xp, &yp}, dim3{2, 1, 1}, dim3{128, 1, 1}, 128 * 4);
    ok = err.empty();
    bool same = true;
    for (unsigned t = 0; t < 128; ++t) same = same && y[t] == x[127 - t];
    expect(ok && !same, "a missing barrier gives wrong results (threads run as far as they can)");

    err = launch("divergent_shuffle", {&yp}, dim3{1, 1, 1}, dim3{64, 1, 1}, 0);
    expect(err.find("deadlock") != std::string::npos, "a shuffle half the warp skips is reported");
    std::printf("     (%s)\n", err.c_str());

    err = launch("shuffle_from_exited", {&yp}, dim3{1, 1, 1}, dim3{32, 1, 1}, 0);
    expect(err.find("exited") != std::string::npos, "a shuffle from an exited lane is reported");
    std::printf("     (%s)\n", err.c_str());
    return failures ? 1 : 0;
}

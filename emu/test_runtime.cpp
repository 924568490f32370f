// headcode-emu's own test: the fiber runtime runs correct kernels correctly and reports
// the faults a GPU would hang or misbehave on. Built and run by emu/build.sh --test.
#include <cstdio>
#include <cstdlib>
#include <cstring>
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

// Each thread reads its lower neighbour's value with no barrier in between: a race. In the
// forward schedule the neighbour has always run first, so the answer looks right.
void shift_no_barrier(const float *x, float *y) {
    float *buf = static_cast<float *>(emu::dyn_smem());
    const unsigned t = threadIdx.x, n = blockDim.x;
    buf[t] = x[blockIdx.x * n + t];
    y[blockIdx.x * n + t] = t ? buf[t - 1] : 0.f;
}

// Block b reads what block b-1 wrote: blocks have no order on a GPU, another race the
// forward schedule hides.
void chain_blocks(float *y) {
    if (threadIdx.x == 0) y[blockIdx.x] = blockIdx.x ? y[blockIdx.x - 1] + 1.f : 1.f;
}

// Each thread reads the other warp's slot, shuffles, then overwrites its own slot, all between
// the same two barriers: a race between warps that lockstep rounds hide (every read happens
// before any thread's first shuffle there).
void cross_warp_after_shuffle(const float *x, float *y) {
    float *buf = static_cast<float *>(emu::dyn_smem());
    const unsigned t = threadIdx.x, n = blockDim.x;
    buf[t] = x[t];
    __syncthreads();
    const float v = buf[(t + 32) % n];
    const float z = __shfl_xor_sync(0xffffffffu, v, 1);
    buf[t] = z;
    __syncthreads();
    y[t] = buf[t] + v;
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

// Thread 0 reads the device clock three times, with barriers between (the phase-clock
// twins' pattern).
void clock_reads(long long *out) {
    for (int i = 0; i < 3; ++i) {
        if (threadIdx.x == 0) out[blockIdx.x * 3 + i] = clock64();
        __syncthreads();
    }
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
EMU_REGISTER(shift_no_barrier, 0);
EMU_REGISTER(chain_blocks, 0);
EMU_REGISTER(cross_warp_after_shuffle, 0);
EMU_REGISTER(shuffle_from_exited, 0);
EMU_REGISTER(clock_reads, 0);

int main() {
    // Read once, at the first clock read: the counting clock (the schedule digests' setting).
    setenv("HEADCODE_EMU_CLOCK", "count", 1);
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

    // Schedules: race-free kernels give the same bits in every order; each of the three
    // races above looks right in the forward schedule and changes in at least one other.
    struct Out {
        std::vector<float> rev, sum, shift, chain, cross;
    };
    auto run_all = [&](const char *schedule, Out &o) {
        std::string e = emu::set_schedule(schedule);
        o.rev.assign(2 * 128, 0.f);
        o.sum.assign(blocks, 0.f);
        o.shift.assign(2 * 128, 0.f);
        o.chain.assign(64, 0.f);
        o.cross.assign(64, 0.f);
        float *rp = o.rev.data(), *sp2 = o.sum.data(), *shp = o.shift.data(),
              *cp = o.chain.data(), *xw = o.cross.data();
        for (auto r : {launch("reverse", {&xp, &rp}, dim3{2, 1, 1}, dim3{128, 1, 1}, 128 * 4),
                       launch("block_sum", {&xp, &sp2, &nn}, dim3{blocks, 1, 1}, dim3{256, 1, 1}, 0),
                       launch("shift_no_barrier", {&xp, &shp}, dim3{2, 1, 1}, dim3{128, 1, 1}, 128 * 4),
                       launch("chain_blocks", {&cp}, dim3{64, 1, 1}, dim3{32, 1, 1}, 0),
                       launch("cross_warp_after_shuffle", {&xp, &xw}, dim3{1, 1, 1}, dim3{64, 1, 1},
                              64 * 4)})
            if (e.empty()) e = r;
        return e;
    };
    auto same_bits = [](const std::vector<float> &a, const std::vector<float> &b) {
        return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * 4) == 0;
    };
    Out fwd;
    err = run_all("forward", fwd);
    bool right = true;
    for (unsigned b = 0; b < 2; ++b)
        for (unsigned t = 0; t < 128; ++t)
            right = right && fwd.shift[b * 128 + t] == (t ? x[b * 128 + t - 1] : 0.f);
    for (unsigned b = 0; b < 64; ++b) right = right && fwd.chain[b] == (float)(b + 1);
    for (unsigned t = 0; t < 64; ++t) right = right && fwd.cross[t] == x[((t ^ 1u) + 32) % 64] + x[(t + 32) % 64];
    expect(err.empty() && right, "forward schedule: the three races look right");
    struct Want {
        const char *sched;
        bool shift, chain, cross;  // which races this schedule shows
    };
    for (const Want w : {Want{"reverse", true, true, false}, Want{"warps", false, false, true},
                         Want{"warps-reverse", true, true, true}, Want{"random:1", true, true, true},
                         Want{"random:2", true, true, true}}) {
        Out o;
        err = run_all(w.sched, o);
        const bool ok = err.empty() && same_bits(o.rev, fwd.rev) && same_bits(o.sum, fwd.sum) &&
                        same_bits(o.shift, fwd.shift) != w.shift &&
                        same_bits(o.chain, fwd.chain) != w.chain && same_bits(o.cross, fwd.cross) != w.cross;
        std::string shows;
        for (auto [on, name] : {std::pair{w.shift, "lanes"}, std::pair{w.chain, "blocks"},
                                std::pair{w.cross, "warps"}})
            if (on) shows += std::string(shows.empty() ? "" : ", ") + name;
        const std::string what = std::string(w.sched) +
                                 " schedule: race-free kernels bit-identical to forward; the "
                                 "race between " + shows + " shows, no other";
        expect(ok, what.c_str());
    }
    Out r1, r2;
    run_all("random:5", r1);
    run_all("random:5", r2);
    expect(same_bits(r1.shift, r2.shift) && same_bits(r1.chain, r2.chain) && same_bits(r1.cross, r2.cross),
           "random:SEED is reproducible");
    const std::string bad = emu::set_schedule("sideways");
    err = launch("reverse", {&xp, &yp}, dim3{2, 1, 1}, dim3{128, 1, 1}, 128 * 4);
    expect(!bad.empty() && err == bad, "an unknown schedule is refused, and so is every launch");
    std::printf("     (%s)\n", err.c_str());
    expect(!emu::set_schedule("random:-3").empty() && !emu::set_schedule("random:").empty() &&
               !emu::set_schedule("random:1x").empty() && emu::set_schedule("random:0").empty(),
           "random:SEED needs a decimal seed");
    // HEADCODE_EMU_CLOCK=count: each block's clock counts its reads from 1, whatever order
    // the blocks and threads run in.
    bool counts = true;
    for (const char *sched : {"forward", "random:3", "warps-reverse"}) {
        emu::set_schedule(sched);
        std::vector<long long> c(4 * 3, 0);
        long long *cp = c.data();
        err = launch("clock_reads", {&cp}, dim3{4, 1, 1}, dim3{64, 1, 1}, 0);
        for (unsigned i = 0; i < c.size(); ++i)
            counts = counts && err.empty() && c[i] == (long long)(i % 3 + 1);
    }
    expect(counts, "HEADCODE_EMU_CLOCK=count: a block's clock counts its reads, in every schedule");
    emu::set_schedule("forward");
    return failures ? 1 : 0;
}

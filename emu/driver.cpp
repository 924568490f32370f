// headcode-emu: a CUDA driver API (libcuda.so.1) that runs headcode's own kernels on the
// CPU, for checking the CUDA path where no GPU is (`scripts/emu-selftest.sh`).
//
// It implements the driver calls a `--features cuda` headcode binary makes: one device
// that reports itself as an sm_90 part with an H100's limits, memory as host memory,
// streams that run their work at once (in order), stream capture into replayable graphs,
// events, and kernel launches by name from the kernels compiled into this library
// (emu/build.sh). Modules load any image; a function that is not one of ours (candle's PTX
// kernels) is CUDA_ERROR_NOT_FOUND. Launches are checked against the limits a GPU enforces
// (block size, __launch_bounds__, dynamic shared memory over the opted-in size); new device
// memory is filled with 0xFF bytes (NaN as f32) because cuMemAlloc does not clear it.
// HEADCODE_EMU_DIGEST=FILE appends a line per device-to-host copy (sequence number, bytes,
// FNV-1a hash, the kernel launched last): two runs of a deterministic program under
// different schedules (HEADCODE_EMU_SCHEDULE, runtime.cpp) must write the same file.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstdint>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "emu.h"

namespace {

typedef int CUresult;
typedef unsigned long long CUdeviceptr;
constexpr CUresult OK = 0, INVALID_VALUE = 1, OUT_OF_MEMORY = 2, INVALID_DEVICE = 101,
                   INVALID_HANDLE = 400, NOT_FOUND = 500, NOT_READY = 600,
                   LAUNCH_FAILED = 719, NOT_SUPPORTED = 801, CAPTURE_UNSUPPORTED = 900,
                   CAPTURE_UNMATCHED = 903;

struct Func {
    const emu::Kernel *k;
    int max_dyn_smem = 48 * 1024;
};

struct Graph {
    std::vector<std::function<int()>> ops;
};

struct Stream {
    Graph *capture = nullptr;
};

struct Event {
    std::chrono::steady_clock::time_point t{};
    bool recorded = false;
};

std::mutex g_mu;
std::map<CUdeviceptr, std::size_t> g_allocs;
std::size_t g_used = 0;
constexpr std::size_t kTotal = 80ull << 30;
Stream g_default_stream;
int g_ctx_token = 1;

// The digest log (HEADCODE_EMU_DIGEST): what the host read back, in order.
struct Digest {
    std::FILE *f = nullptr;
    unsigned long long seq = 0;
    std::string last_kernel = "-";
};
Digest &digest() {
    static Digest d = [] {
        Digest d;
        if (const char *p = std::getenv("HEADCODE_EMU_DIGEST"); p && *p) {
            d.f = std::fopen(p, "w");
            if (!d.f) std::fprintf(stderr, "headcode-emu: cannot write HEADCODE_EMU_DIGEST=%s\n", p);
        }
        return d;
    }();
    return d;
}
void digest_copy(const void *p, std::size_t n) {
    Digest &d = digest();
    if (!d.f) return;
    std::uint64_t h = 0xcbf29ce484222325ull;  // FNV-1a 64
    const auto *b = static_cast<const unsigned char *>(p);
    for (std::size_t i = 0; i < n; ++i) h = (h ^ b[i]) * 0x100000001b3ull;
    std::lock_guard<std::mutex> l(g_mu);
    std::fprintf(d.f, "%llu %zu %016llx after %s\n", ++d.seq, n, (unsigned long long)h,
                 d.last_kernel.c_str());
    std::fflush(d.f);  // a run that aborts keeps what it read so far
}
void digest_launch(const std::string &name) {
    Digest &d = digest();
    if (!d.f) return;
    std::lock_guard<std::mutex> l(g_mu);
    d.last_kernel = name;
}

bool verbose() {
    static const bool v = std::getenv("HEADCODE_EMU_VERBOSE") != nullptr;
    return v;
}

// NULL, CU_STREAM_LEGACY (0x1) and CU_STREAM_PER_THREAD (0x2) name the default stream.
bool is_default(void *s) { return reinterpret_cast<std::uintptr_t>(s) <= 2; }
Stream *stream_of(void *s) { return is_default(s) ? &g_default_stream : static_cast<Stream *>(s); }

CUresult alloc(CUdeviceptr *dptr, std::size_t bytes) {
    if (!dptr || bytes == 0) return INVALID_VALUE;
    void *p = nullptr;
    if (posix_memalign(&p, 256, bytes) != 0) return OUT_OF_MEMORY;
    std::memset(p, 0xFF, bytes);
    std::lock_guard<std::mutex> l(g_mu);
    *dptr = reinterpret_cast<CUdeviceptr>(p);
    g_allocs[*dptr] = bytes;
    g_used += bytes;
    return OK;
}

CUresult release(CUdeviceptr d) {
    if (d == 0) return OK;
    std::lock_guard<std::mutex> l(g_mu);
    auto it = g_allocs.find(d);
    if (it == g_allocs.end()) return INVALID_VALUE;
    g_used -= it->second;
    g_allocs.erase(it);
    std::free(reinterpret_cast<void *>(d));
    return OK;
}

// Is [p, p+bytes) inside one live allocation? (device-side copies only; host pointers are
// the caller's.)
bool in_device(CUdeviceptr p, std::size_t bytes) {
    std::lock_guard<std::mutex> l(g_mu);
    auto it = g_allocs.upper_bound(p);
    if (it == g_allocs.begin()) return false;
    --it;
    return p >= it->first && p + bytes <= it->first + it->second;
}

}  // namespace

namespace emu {
int enqueue(void *stream, std::function<int()> op) {
    Stream *s = stream_of(stream);
    if (s->capture) {
        s->capture->ops.push_back(std::move(op));
        return OK;
    }
    return op();
}
}  // namespace emu

extern "C" {

// For libcublas.so.13, which finds it with dlsym at run time: a link-time reference would
// have to resolve against whichever libcuda.so the link finds first (CUDA's stub, in CI).
int headcode_emu_enqueue(void *stream, std::function<int()> *op) {
    return emu::enqueue(stream, std::move(*op));
}

CUresult cuInit(unsigned) { return OK; }
CUresult cuDriverGetVersion(int *v) {
    if (!v) return INVALID_VALUE;
    *v = 13000;
    return OK;
}
CUresult cuDeviceGetCount(int *n) {
    if (!n) return INVALID_VALUE;
    *n = 1;
    return OK;
}
CUresult cuDeviceGet(int *dev, int ordinal) {
    if (!dev) return INVALID_VALUE;
    if (ordinal != 0) return INVALID_DEVICE;
    *dev = 0;
    return OK;
}
CUresult cuDeviceGetName(char *name, int len, int dev) {
    if (dev != 0) return INVALID_DEVICE;
    if (!name || len <= 0) return INVALID_VALUE;
    std::snprintf(name, (std::size_t)len, "headcode-emu (CUDA kernels emulated on the CPU)");
    return OK;
}
CUresult cuDeviceTotalMem_v2(std::size_t *bytes, int dev) {
    if (dev != 0) return INVALID_DEVICE;
    *bytes = kTotal;
    return OK;
}
CUresult cuDeviceGetAttribute(int *v, int attr, int dev) {
    if (dev != 0) return INVALID_DEVICE;
    if (!v) return INVALID_VALUE;
    switch (attr) {
        case 1: *v = 1024; break;             // max threads per block
        case 2: *v = 1024; break;             // max block dim x
        case 3: *v = 1024; break;             // y
        case 4: *v = 64; break;               // z
        case 5: *v = 2147483647; break;       // max grid x
        case 6: *v = 65535; break;            // y
        case 7: *v = 65535; break;            // z
        case 8: *v = 48 * 1024; break;        // shared memory per block
        case 10: *v = 32; break;              // warp size
        case 13: *v = 1755000; break;         // clock rate, kHz
        case 16: *v = 132; break;             // SMs
        case 36: *v = 2619000; break;         // memory clock, kHz (H100 SXM HBM3)
        case 37: *v = 5120; break;            // memory bus width, bits
        case 38: *v = 50 * 1024 * 1024; break;  // L2 bytes
        case 75: *v = 9; break;               // compute capability
        case 76: *v = 0; break;
        case 81: *v = 233472; break;          // shared memory per SM
        case 97: *v = 232448; break;          // shared memory per block, opt-in
        case 115: *v = 0; break;              // memory pools: no (plain cuMemAlloc)
        default: *v = 0; break;
    }
    return OK;
}
CUresult cuDevicePrimaryCtxRetain(void **ctx, int dev) {
    if (dev != 0) return INVALID_DEVICE;
    *ctx = &g_ctx_token;
    return OK;
}
CUresult cuDevicePrimaryCtxRelease_v2(int) { return OK; }
CUresult cuCtxSetCurrent(void *) { return OK; }
CUresult cuCtxGetCurrent(void **ctx) {
    *ctx = &g_ctx_token;
    return OK;
}
CUresult cuCtxGetDevice(int *dev) {
    *dev = 0;
    return OK;
}
CUresult cuCtxSynchronize() { return OK; }
CUresult cuCtxDestroy_v2(void *) { return OK; }

CUresult cuGetErrorString(CUresult e, const char **s) {
    static thread_local char buf[64];
    std::snprintf(buf, sizeof buf, "headcode-emu CUresult %d", e);
    *s = buf;
    return OK;
}
CUresult cuGetErrorName(CUresult e, const char **s) { return cuGetErrorString(e, s); }

CUresult cuMemGetInfo_v2(std::size_t *free_b, std::size_t *total) {
    std::lock_guard<std::mutex> l(g_mu);
    *free_b = kTotal - g_used;
    *total = kTotal;
    return OK;
}
CUresult cuMemAlloc_v2(CUdeviceptr *d, std::size_t bytes) { return alloc(d, bytes); }
CUresult cuMemAllocAsync(CUdeviceptr *d, std::size_t bytes, void *) { return alloc(d, bytes); }
CUresult cuMemFree_v2(CUdeviceptr d) { return release(d); }
CUresult cuMemFreeAsync(CUdeviceptr d, void *s) {
    return emu::enqueue(s, [d] { return release(d); });
}

CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr dst, const void *src, std::size_t n, void *s) {
    if (n && !in_device(dst, n)) return INVALID_VALUE;
    return emu::enqueue(s, [=] {
        std::memcpy(reinterpret_cast<void *>(dst), src, n);
        return OK;
    });
}
CUresult cuMemcpyHtoD_v2(CUdeviceptr dst, const void *src, std::size_t n) {
    return cuMemcpyHtoDAsync_v2(dst, src, n, nullptr);
}
CUresult cuMemcpyDtoHAsync_v2(void *dst, CUdeviceptr src, std::size_t n, void *s) {
    if (n && !in_device(src, n)) return INVALID_VALUE;
    return emu::enqueue(s, [=] {
        std::memcpy(dst, reinterpret_cast<const void *>(src), n);
        digest_copy(dst, n);
        return OK;
    });
}
CUresult cuMemcpyDtoH_v2(void *dst, CUdeviceptr src, std::size_t n) {
    return cuMemcpyDtoHAsync_v2(dst, src, n, nullptr);
}
CUresult cuMemcpyDtoDAsync_v2(CUdeviceptr dst, CUdeviceptr src, std::size_t n, void *s) {
    if (n && (!in_device(dst, n) || !in_device(src, n))) return INVALID_VALUE;
    return emu::enqueue(s, [=] {
        std::memmove(reinterpret_cast<void *>(dst), reinterpret_cast<const void *>(src), n);
        return OK;
    });
}
CUresult cuMemcpyDtoD_v2(CUdeviceptr dst, CUdeviceptr src, std::size_t n) {
    return cuMemcpyDtoDAsync_v2(dst, src, n, nullptr);
}
CUresult cuMemcpyPeerAsync(CUdeviceptr, void *, CUdeviceptr, void *, std::size_t, void *) {
    return NOT_SUPPORTED;
}
CUresult cuMemsetD8Async(CUdeviceptr dst, unsigned char v, std::size_t n, void *s) {
    if (n && !in_device(dst, n)) return INVALID_VALUE;
    return emu::enqueue(s, [=] {
        std::memset(reinterpret_cast<void *>(dst), v, n);
        return OK;
    });
}
CUresult cuMemsetD8_v2(CUdeviceptr dst, unsigned char v, std::size_t n) {
    return cuMemsetD8Async(dst, v, n, nullptr);
}

CUresult cuStreamCreate(void **s, unsigned) {
    *s = new Stream();
    return OK;
}
CUresult cuStreamCreateWithPriority(void **s, unsigned f, int) { return cuStreamCreate(s, f); }
CUresult cuStreamDestroy_v2(void *s) {
    if (is_default(s)) return INVALID_HANDLE;
    delete static_cast<Stream *>(s);
    return OK;
}
CUresult cuStreamSynchronize(void *s) {
    return stream_of(s)->capture ? CAPTURE_UNSUPPORTED : OK;
}
CUresult cuStreamWaitEvent(void *, void *, unsigned) { return OK; }
CUresult cuStreamQuery(void *) { return OK; }
CUresult cuStreamBeginCapture_v2(void *s, int) {
    Stream *st = stream_of(s);
    if (is_default(s) || st->capture) return INVALID_VALUE;  // the default stream cannot be captured
    st->capture = new Graph();
    return OK;
}
CUresult cuStreamEndCapture(void *s, void **graph) {
    Stream *st = stream_of(s);
    if (!st->capture) return CAPTURE_UNMATCHED;
    *graph = st->capture;
    st->capture = nullptr;
    return OK;
}
CUresult cuStreamIsCapturing(void *s, int *status) {
    *status = stream_of(s)->capture ? 1 : 0;
    return OK;
}
CUresult cuGraphInstantiateWithFlags(void **exec, void *graph, unsigned long long) {
    if (!graph) return INVALID_VALUE;
    *exec = new Graph(*static_cast<Graph *>(graph));
    return OK;
}
CUresult cuGraphLaunch(void *exec, void *s) {
    if (!exec) return INVALID_VALUE;
    Graph *g = static_cast<Graph *>(exec);
    for (auto &op : g->ops) {
        const CUresult r = emu::enqueue(s, op);
        if (r != OK) return r;
    }
    return OK;
}
CUresult cuGraphUpload(void *, void *) { return OK; }
CUresult cuGraphExecDestroy(void *exec) {
    delete static_cast<Graph *>(exec);
    return OK;
}
CUresult cuGraphDestroy(void *graph) {
    delete static_cast<Graph *>(graph);
    return OK;
}

CUresult cuEventCreate(void **e, unsigned) {
    *e = new Event();
    return OK;
}
CUresult cuEventDestroy_v2(void *e) {
    delete static_cast<Event *>(e);
    return OK;
}
CUresult cuEventRecord(void *e, void *s) {
    Event *ev = static_cast<Event *>(e);
    return emu::enqueue(s, [ev] {
        ev->t = std::chrono::steady_clock::now();
        ev->recorded = true;
        return OK;
    });
}
CUresult cuEventSynchronize(void *) { return OK; }
CUresult cuEventQuery(void *) { return OK; }
CUresult cuEventElapsedTime_v2(float *ms, void *a, void *b) {
    Event *ea = static_cast<Event *>(a), *eb = static_cast<Event *>(b);
    if (!ea->recorded || !eb->recorded) return NOT_READY;
    *ms = std::chrono::duration<float, std::milli>(eb->t - ea->t).count();
    return OK;
}
CUresult cuEventElapsedTime(float *ms, void *a, void *b) { return cuEventElapsedTime_v2(ms, a, b); }

CUresult cuModuleLoadData(void **m, const void *image) {
    if (!image) return INVALID_VALUE;
    *m = new int(0);
    return OK;
}
CUresult cuModuleLoad(void **, const char *) { return NOT_SUPPORTED; }
CUresult cuModuleUnload(void *m) {
    delete static_cast<int *>(m);
    return OK;
}
CUresult cuModuleGetFunction(void **f, void *, const char *name) {
    const emu::Kernel *k = emu::find_kernel(name);
    if (!k) {
        if (verbose()) std::fprintf(stderr, "headcode-emu: no kernel named %s\n", name);
        return NOT_FOUND;
    }
    *f = new Func{k};
    return OK;
}
CUresult cuFuncSetAttribute(void *f, int attr, int value) {
    Func *fn = static_cast<Func *>(f);
    if (!fn) return INVALID_HANDLE;
    if (attr == 8) {  // CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES
        if (value < 0 || value > 232448) return INVALID_VALUE;
        fn->max_dyn_smem = value;
    }
    return OK;
}

CUresult cuLaunchKernel(void *f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                        unsigned bz, unsigned smem, void *s, void **params, void **extra) {
    Func *fn = static_cast<Func *>(f);
    if (!fn) return INVALID_HANDLE;
    if (extra) return NOT_SUPPORTED;
    const unsigned long long threads = (unsigned long long)bx * by * bz;
    const char *why = nullptr;
    if (gx == 0 || gy == 0 || gz == 0 || threads == 0) why = "an empty grid or block";
    else if (threads > 1024 || bz > 64) why = "more than 1024 threads per block";
    else if (threads > fn->k->max_threads) why = "more threads than __launch_bounds__";
    else if (gy > 65535 || gz > 65535 || gx > 2147483647u) why = "a grid over the limits";
    else if ((int)smem > fn->max_dyn_smem) why = "more dynamic shared memory than opted in";
    if (why) {
        std::fprintf(stderr,
                     "headcode-emu: launch of %s refused: %s (grid %u,%u,%u block %u,%u,%u, "
                     "%u B dynamic shared)\n",
                     fn->k->name.c_str(), why, gx, gy, gz, bx, by, bz, smem);
        return INVALID_VALUE;
    }
    if (!params) return INVALID_VALUE;
    emu::Bound body = fn->k->bind(params);
    const emu::Kernel *k = fn->k;
    const dim3 grid{gx, gy, gz}, block{bx, by, bz};
    return emu::enqueue(s, [k, body, grid, block, smem] {
        if (verbose())
            std::fprintf(stderr, "headcode-emu: %s grid (%u,%u,%u) block (%u,%u,%u) smem %u\n",
                         k->name.c_str(), grid.x, grid.y, grid.z, block.x, block.y, block.z,
                         smem);
        digest_launch(k->name);
        const std::string err = emu::run_grid(*k, body, grid, block, smem);
        if (!err.empty()) {
            std::fprintf(stderr, "headcode-emu: %s\n", err.c_str());
            return LAUNCH_FAILED;
        }
        return OK;
    });
}

}  // extern "C"

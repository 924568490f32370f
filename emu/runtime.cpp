// headcode-emu: the fiber runtime. Every CUDA thread of a block is a fiber (own stack) on
// the launching OS thread. Fibers run until they block at __syncthreads or a warp shuffle (or
// finish); the scheduler releases a warp once every live lane of it has posted its shuffle
// value, and the block once every live thread waits at the barrier. Anything else can never
// complete on a GPU either, and is reported as an error instead of hanging.
//
// Schedules (HEADCODE_EMU_SCHEDULE). A thread runs from one barrier or shuffle to the next
// without interruption, so in the default `forward` schedule (lockstep rounds: every thread in
// index order to its next barrier or shuffle, blocks in index order) a thread that reads,
// without a barrier, what a lower-numbered thread wrote gets the value a GPU only sometimes
// would. The others run the same program in other orders a GPU may pick:
//   reverse         lockstep rounds, threads and blocks in descending order;
//   warps           each warp alone from one barrier to the next (its shuffles resolved as
//                   they come), warps, lanes and blocks in ascending order: warps drift
//                   apart as far as they can;
//   warps-reverse   the same, all in descending order;
//   random:SEED     as `warps`, in a fresh seeded permutation per barrier interval (warps),
//                   per shuffle round (lanes) and per grid (blocks).
// Of two accesses to one address by different warps between the same two barriers, `warps`
// and `warps-reverse` run them in opposite orders, so one of them differs from `forward`; of
// two by lanes of one warp between the same two shuffles, `reverse` does. A race-free kernel
// therefore gives bit-identical results under all five; results that change with the
// schedule are a race. HEADCODE_EMU_DIGEST (driver.cpp) records what the host reads back, to
// compare runs.
#include <sys/mman.h>
#include <algorithm>
#include <ucontext.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include "emu.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#define EMU_ASAN 1
#else
#define EMU_ASAN 0
#endif

// Fiber switches. On x86-64 a small routine saves the callee-saved registers and the
// FP control words and swaps stacks (no system call; ucontext's swapcontext makes a
// sigprocmask call per switch, which doubled the emulator's run time); elsewhere ucontext.
#if defined(__x86_64__)
extern "C" void emu_ctx_switch(void **save_sp, void *new_sp);
asm(R"(
    .text
    .globl emu_ctx_switch
    .type emu_ctx_switch, @function
emu_ctx_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size emu_ctx_switch, .-emu_ctx_switch
)");
struct Ctx {
    void *sp = nullptr;
};
void ctx_make(Ctx &c, char *stack, std::size_t size, void (*entry)()) {
    auto top = reinterpret_cast<std::uintptr_t>(stack + size) & ~std::uintptr_t(15);
    auto *slot = reinterpret_cast<std::uint64_t *>(top - 16);
    slot[0] = reinterpret_cast<std::uint64_t>(entry);  // popped by `ret`
    slot[1] = 0;                                       // entry's (absent) return address
    std::uint64_t *sp = slot - 7;                      // rbp rbx r12 r13 r14 r15 + FP words
    for (int i = 1; i < 7; ++i) sp[i] = 0;
    std::uint32_t fp[2] = {0x1F80u, 0x037Fu};  // default MXCSR, x87 control word
    std::memcpy(sp, fp, 8);
    c.sp = sp;
}
inline void ctx_swap(Ctx &from, Ctx &to) { emu_ctx_switch(&from.sp, to.sp); }
#else
struct Ctx {
    ucontext_t uc;
};
void ctx_make(Ctx &c, char *stack, std::size_t size, void (*entry)()) {
    getcontext(&c.uc);
    c.uc.uc_stack.ss_sp = stack;
    c.uc.uc_stack.ss_size = size;
    c.uc.uc_link = nullptr;
    makecontext(&c.uc, entry, 0);
}
inline void ctx_swap(Ctx &from, Ctx &to) { swapcontext(&from.uc, &to.uc); }
#endif

namespace emu {
namespace {

enum State { RUNNABLE, AT_BARRIER, AT_SHUFFLE, DONE };

struct Fiber {
    Ctx ctx;
    uint3 tid;
    unsigned lin;
    State state;
    std::uint64_t post;
    unsigned src;
    std::uint64_t got;
    char *stack;
    void *fake_stack;
};

#if EMU_ASAN
constexpr std::size_t kStack = 512 * 1024;
#else
constexpr std::size_t kStack = 128 * 1024;
#endif

struct Schedule {
    enum Order { FORWARD, REVERSE, RANDOM } order = FORWARD;
    bool serial = false;  // a warp at a time to the next barrier, instead of lockstep rounds
    std::uint64_t seed = 0;
    std::string error;  // non-empty: the setting could not be read
};

Schedule parse_schedule(const char *v) {
    Schedule s;
    if (!v || !*v || std::strcmp(v, "forward") == 0) return s;
    if (std::strcmp(v, "reverse") == 0 || std::strcmp(v, "warps-reverse") == 0) {
        s.order = Schedule::REVERSE;
        s.serial = v[0] == 'w';
        return s;
    }
    if (std::strcmp(v, "warps") == 0) {
        s.serial = true;
        return s;
    }
    if (std::strncmp(v, "random:", 7) == 0 && v[7] >= '0' && v[7] <= '9') {
        char *end = nullptr;
        s.seed = std::strtoull(v + 7, &end, 10);
        if (end && *end == 0) {
            s.order = Schedule::RANDOM;
            s.serial = true;
            return s;
        }
    }
    s.error = std::string("HEADCODE_EMU_SCHEDULE=") + v +
              ": expected forward, reverse, warps, warps-reverse or random:SEED (SEED a decimal "
              "integer)";
    return s;
}

std::mutex &sched_mu() {
    static std::mutex m;
    return m;
}
Schedule &schedule() {
    static Schedule s = parse_schedule(std::getenv("HEADCODE_EMU_SCHEDULE"));
    return s;
}
std::uint64_t g_launches = 0;  // launches so far (under sched_mu): seeds each grid's stream

// splitmix64: a small, well-mixed generator; std::shuffle's use of its engine is not
// specified, so the permutations are drawn here to be the same on every standard library.
struct Rng {
    std::uint64_t x;
    std::uint64_t next() {
        std::uint64_t z = (x += 0x9E3779B97F4A7C15ull);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        return z ^ (z >> 31);
    }
};

// Order 0..n-1 as the schedule says (Fisher-Yates with Rng for `random`).
void order(std::vector<unsigned> &ord, unsigned n, Schedule::Order o, Rng &rng) {
    ord.resize(n);
    for (unsigned i = 0; i < n; ++i) ord[i] = o == Schedule::REVERSE ? n - 1 - i : i;
    if (o == Schedule::RANDOM)
        for (unsigned i = n; i > 1; --i) std::swap(ord[i - 1], ord[rng.next() % i]);
}

struct BlockRun {
    const Bound *body = nullptr;
    Schedule::Order order_kind = Schedule::FORWARD;
    bool serial = false;
    Rng rng{0};
    std::vector<unsigned> ord, warp_ord;
    Ctx sched;
    std::vector<Fiber> f;
    char *stacks = nullptr;
    std::size_t stacks_len = 0;
    const void *sched_bottom = nullptr;
    std::size_t sched_size = 0;
    void *sched_fake = nullptr;
    ~BlockRun() {
        if (stacks) munmap(stacks, stacks_len);
    }
};

thread_local BlockRun *g_run = nullptr;
thread_local Fiber *g_cur = nullptr;
thread_local uint3 g_bidx;
thread_local dim3 g_bdim, g_gdim;
thread_local char *g_smem = nullptr;
thread_local long long g_block_ticks = 0;  // clock_now's count in the running block

// HEADCODE_EMU_CLOCK=count: the device clocks count reads within the block (1, 2, ...)
// instead of telling the host's time, so a phase-clock record is the same in every
// schedule and run (scripts/emu-selftest.sh compares all read-backs across schedules).
bool clock_counts() {
    static const bool c = [] {
        const char *v = std::getenv("HEADCODE_EMU_CLOCK");
        return v != nullptr && std::strcmp(v, "count") == 0;
    }();
    return c;
}

// fiber -> scheduler
void yield_to_sched(Fiber *f) {
#if EMU_ASAN
    __sanitizer_start_switch_fiber(f->state == DONE ? nullptr : &f->fake_stack,
                                   g_run->sched_bottom, g_run->sched_size);
#endif
    ctx_swap(f->ctx, g_run->sched);
#if EMU_ASAN
    __sanitizer_finish_switch_fiber(f->fake_stack, nullptr, nullptr);
#endif
}

void fiber_main() {
    Fiber *f = g_cur;
#if EMU_ASAN
    __sanitizer_finish_switch_fiber(nullptr, &g_run->sched_bottom, &g_run->sched_size);
#endif
    (*g_run->body)();
    f->state = DONE;
    yield_to_sched(f);
}

// scheduler -> fiber
void resume(BlockRun &run, Fiber &f) {
    g_cur = &f;
#if EMU_ASAN
    __sanitizer_start_switch_fiber(&run.sched_fake, f.stack, kStack);
#endif
    ctx_swap(run.sched, f.ctx);
#if EMU_ASAN
    __sanitizer_finish_switch_fiber(run.sched_fake, nullptr, nullptr);
#endif
    g_cur = nullptr;
}

std::mutex &reg_mu() {
    static std::mutex m;
    return m;
}
std::map<std::string, std::unique_ptr<Kernel>> &registry() {
    static std::map<std::string, std::unique_ptr<Kernel>> r;
    return r;
}

std::string run_block(BlockRun &run, unsigned nthreads) {
    if (run.f.size() < nthreads) {
        if (run.stacks) munmap(run.stacks, run.stacks_len);
        run.stacks_len = kStack * nthreads;
        void *p = mmap(nullptr, run.stacks_len, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (p == MAP_FAILED) return "cannot map fiber stacks";
        run.stacks = static_cast<char *>(p);
        run.f.resize(nthreads);
    }
    const unsigned bx = g_bdim.x, by = g_bdim.y;
    for (unsigned i = 0; i < nthreads; ++i) {
        Fiber &f = run.f[i];
        f.tid = uint3{i % bx, (i / bx) % by, i / (bx * by)};
        f.lin = i;
        f.state = RUNNABLE;
        f.stack = run.stacks + kStack * i;
        f.fake_stack = nullptr;
        ctx_make(f.ctx, f.stack, kStack, fiber_main);
    }
    const unsigned warps = (nthreads + 31) / 32;
    // Warp w's lanes all wait at a shuffle: hand each its value and let them go on.
    auto release_warp = [&](unsigned w, bool &released) -> std::string {
        const unsigned lo = w * 32, hi = std::min(nthreads, lo + 32);
        bool all = true, any = false;
        for (unsigned i = lo; i < hi; ++i) {
            if (run.f[i].state == DONE) continue;
            any = true;
            all = all && run.f[i].state == AT_SHUFFLE;
        }
        released = any && all;
        if (!released) return "";
        for (unsigned i = lo; i < hi; ++i) {
            Fiber &f = run.f[i];
            if (f.state == DONE) continue;
            const unsigned s = lo + f.src;
            if (s >= hi || run.f[s].state != AT_SHUFFLE) {
                char buf[160];
                std::snprintf(buf, sizeof buf,
                              "thread %u shuffles from lane %u, which has exited or does "
                              "not exist",
                              i, f.src);
                return buf;
            }
            f.got = run.f[s].post;
        }
        for (unsigned i = lo; i < hi; ++i)
            if (run.f[i].state == AT_SHUFFLE) run.f[i].state = RUNNABLE;
        return "";
    };
    for (;;) {
        if (run.serial) {
            // One barrier interval: each warp in turn runs alone until its lanes wait at the
            // barrier or have exited, its shuffles resolved as they come.
            order(run.warp_ord, warps, run.order_kind, run.rng);
            for (unsigned w : run.warp_ord) {
                const unsigned lo = w * 32, n = std::min(nthreads, lo + 32) - lo;
                for (bool released = true; released;) {
                    order(run.ord, n, run.order_kind, run.rng);
                    for (unsigned l : run.ord)
                        if (run.f[lo + l].state == RUNNABLE) resume(run, run.f[lo + l]);
                    const std::string err = release_warp(w, released);
                    if (!err.empty()) return err;
                }
            }
        } else {
            // Lockstep: every thread runs to its next barrier or shuffle, then the warps whose
            // lanes all wait at a shuffle go on.
            order(run.ord, nthreads, run.order_kind, run.rng);
            for (unsigned i : run.ord)
                if (run.f[i].state == RUNNABLE) resume(run, run.f[i]);
            bool any_released = false;
            for (unsigned w = 0; w < warps; ++w) {
                bool released = false;
                const std::string err = release_warp(w, released);
                if (!err.empty()) return err;
                any_released = any_released || released;
            }
            if (any_released) continue;
        }
        unsigned done = 0, barrier = 0, shuffle = 0;
        for (unsigned i = 0; i < nthreads; ++i) {
            done += run.f[i].state == DONE;
            barrier += run.f[i].state == AT_BARRIER;
            shuffle += run.f[i].state == AT_SHUFFLE;
        }
        if (done == nthreads) return "";
        if (barrier + done == nthreads) {
            for (unsigned i = 0; i < nthreads; ++i)
                if (run.f[i].state == AT_BARRIER) run.f[i].state = RUNNABLE;
            continue;
        }
        char buf[200];
        std::snprintf(buf, sizeof buf,
                      "deadlock: %u threads wait at __syncthreads, %u at a warp shuffle whose "
                      "warp never completes it, %u have exited",
                      barrier, shuffle, done);
        return buf;
    }
}

}  // namespace

const uint3 &thread_idx() { return g_cur->tid; }
const uint3 &block_idx() { return g_bidx; }
const dim3 &block_dim() { return g_bdim; }
const dim3 &grid_dim() { return g_gdim; }
void *dyn_smem() { return g_smem; }
long long clock_now() {
    if (clock_counts()) return ++g_block_ticks;
    return (long long)std::chrono::duration_cast<std::chrono::nanoseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
}
unsigned lane_id() { return g_cur->lin & 31u; }

void sync_threads() {
    Fiber *f = g_cur;
    f->state = AT_BARRIER;
    yield_to_sched(f);
}

std::uint64_t shuffle(std::uint64_t bits, unsigned src_lane) {
    Fiber *f = g_cur;
    f->post = bits;
    f->src = src_lane;
    f->state = AT_SHUFFLE;
    yield_to_sched(f);
    return f->got;
}

void register_kernel(const char *name, unsigned max_threads, std::function<Bound(void **)> bind) {
    std::lock_guard<std::mutex> l(reg_mu());
    registry()[name] = std::unique_ptr<Kernel>(new Kernel{name, max_threads, std::move(bind)});
}

const Kernel *find_kernel(const char *name) {
    std::lock_guard<std::mutex> l(reg_mu());
    auto it = registry().find(name);
    return it == registry().end() ? nullptr : it->second.get();
}

std::string set_schedule(const char *setting) {
    Schedule s = parse_schedule(setting);
    std::lock_guard<std::mutex> l(sched_mu());
    schedule() = s;
    g_launches = 0;
    return s.error;
}

std::string run_grid(const Kernel &k, const Bound &body, dim3 grid, dim3 block, std::size_t smem) {
    if (g_run) return "nested launch";
    BlockRun run;
    run.body = &body;
    {
        std::lock_guard<std::mutex> l(sched_mu());
        const Schedule &s = schedule();
        if (!s.error.empty()) return s.error;
        run.order_kind = s.order;
        run.serial = s.serial;
        run.rng.x = s.seed * 0x2545F4914F6CDD1Dull + ++g_launches;
    }
    g_run = &run;
    g_bdim = block;
    g_gdim = grid;
    const unsigned nthreads = block.x * block.y * block.z;
    // Fresh per block and filled with 0xFF (a NaN pattern), as nothing initialises shared
    // memory on a GPU either; exactly `smem` bytes, so a sanitizer sees overruns.
    std::unique_ptr<char[]> smem_buf(smem ? new char[smem] : nullptr);
    g_smem = smem_buf.get();
    std::string err;
    const unsigned long long nblocks = (unsigned long long)grid.x * grid.y * grid.z;
    // `random` draws a list of block indices (4 bytes a block); a grid of over 2^24 blocks
    // runs in reverse order instead.
    std::vector<unsigned> blocks;
    const bool drawn = run.order_kind == Schedule::RANDOM && nblocks <= (1ull << 24);
    // (blocks never run at once here, so the order between them is all there is to vary)
    if (drawn) order(blocks, (unsigned)nblocks, run.order_kind, run.rng);
    for (unsigned long long b = 0; b < nblocks && err.empty(); ++b) {
        const unsigned long long lin = drawn ? blocks[b]
                                       : run.order_kind == Schedule::FORWARD ? b
                                                                        : nblocks - 1 - b;
        const unsigned x = (unsigned)(lin % grid.x), y = (unsigned)(lin / grid.x % grid.y),
                       z = (unsigned)(lin / ((unsigned long long)grid.x * grid.y));
        g_bidx = uint3{x, y, z};
        g_block_ticks = 0;
        if (smem) std::memset(g_smem, 0xFF, smem);
        err = run_block(run, nthreads);
        if (!err.empty()) {
            char buf[120];
            std::snprintf(buf, sizeof buf, "%s, block (%u,%u,%u) of (%u,%u,%u): ",
                          k.name.c_str(), x, y, z, grid.x, grid.y, grid.z);
            err = buf + err;
        }
    }
    g_run = nullptr;
    g_smem = nullptr;
    return err;
}

}  // namespace emu

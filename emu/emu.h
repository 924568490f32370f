// headcode-emu: host-side interface between the fake driver (driver.cpp), the fake cuBLAS
// (cublas.cpp) and the fiber runtime (runtime.cpp). Internal to emu/.
#pragma once
#include <cstddef>
#include <functional>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>

#include "include/cuda_runtime.h"

namespace emu {

// A kernel with its arguments copied in, ready to run as one CUDA thread.
using Bound = std::function<void()>;

struct Kernel {
    std::string name;
    unsigned max_threads;  // __launch_bounds__, or 1024
    std::function<Bound(void **)> bind;
};

void register_kernel(const char *name, unsigned max_threads, std::function<Bound(void **)> bind);
const Kernel *find_kernel(const char *name);

// Run the whole grid on this OS thread, block after block. Returns "" or what went wrong
// (a barrier or shuffle that not every thread reaches, a shuffle from an exited lane).
std::string run_grid(const Kernel &k, const Bound &body, dim3 grid, dim3 block, std::size_t smem);

// Set the thread and block order from now on, as HEADCODE_EMU_SCHEDULE does at start-up
// ("forward", "reverse", "warps", "warps-reverse" or "random:SEED"; see runtime.cpp).
// Returns "" or why the setting was refused (then every launch fails with that message until
// a valid one is set).
std::string set_schedule(const char *setting);

// Stream work: run now, or append to the stream's graph while it is being captured.
// `op` returns a CUresult. Returns the CUresult of running it (0 when recorded).
int enqueue(void *stream, std::function<int()> op);

template <class... A, std::size_t... I>
Bound bind_args(void (*f)(A...), void **p, std::index_sequence<I...>) {
    auto args = std::make_tuple(*static_cast<std::decay_t<A> *>(p[I])...);
    return [f, args]() { std::apply(f, args); };
}

struct Registrar {
    template <class... A>
    Registrar(const char *name, unsigned max_threads, void (*f)(A...)) {
        register_kernel(name, max_threads ? max_threads : 1024u, [f](void **p) {
            return bind_args(f, p, std::index_sequence_for<A...>{});
        });
    }
};

}  // namespace emu

#define EMU_REGISTER(name, bound) static emu::Registrar emu_reg_##name(#name, bound, &name)

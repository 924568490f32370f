// headcode-emu: the cuRAND symbols a headcode `--features cuda` binary references
// (libcurand.so.10). candle creates a generator with every CUDA device and draws from it for
// `Tensor::rand`/`randn` on the device (the random model shapes, src/model/random.rs).
// Device memory is host memory here, so the draws write straight into it. The numbers are
// not cuRAND's XORWOW sequence, only seeded and deterministic: nothing compares them with a
// GPU's, the checks compare what the kernels compute from them with the CPU references.
#include <cmath>
#include <cstddef>
#include <cstdint>

namespace {

// cuRAND status codes (curand.h).
constexpr int SUCCESS = 0;
constexpr int NOT_INITIALIZED = 101;
constexpr int LENGTH_NOT_MULTIPLE = 105;

struct Generator {
    std::uint64_t seed = 0;
    std::uint64_t counter = 0;
};

// splitmix64 over (seed, position): each value depends only on the seed and how many values
// were drawn before it, as with a counter-based generator.
std::uint64_t next(Generator *g) {
    std::uint64_t z = g->seed + 0x9E3779B97F4A7C15ull * ++g->counter;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

// Uniform on (0, 1], cuRAND's range (0 excluded, 1 included).
double uniform(Generator *g) { return (static_cast<double>(next(g) >> 11) + 1.0) * 0x1.0p-53; }

template <class T>
int fill_uniform(void *gen, T *out, std::size_t n) {
    if (!gen) return NOT_INITIALIZED;
    auto *g = static_cast<Generator *>(gen);
    for (std::size_t i = 0; i < n; ++i) out[i] = static_cast<T>(uniform(g));
    return SUCCESS;
}

// Box-Muller in pairs; cuRAND's pseudo-random generators refuse an odd count, and so does
// this one, so a caller that forgets to round up fails here as it would on a GPU.
template <class T>
int fill_normal(void *gen, T *out, std::size_t n, T mean, T stddev) {
    if (!gen) return NOT_INITIALIZED;
    if (n % 2 != 0) return LENGTH_NOT_MULTIPLE;
    auto *g = static_cast<Generator *>(gen);
    const double two_pi = 6.283185307179586476925286766559;
    for (std::size_t i = 0; i < n; i += 2) {
        double r = std::sqrt(-2.0 * std::log(uniform(g)));
        double t = two_pi * uniform(g);
        out[i] = static_cast<T>(mean + stddev * r * std::cos(t));
        out[i + 1] = static_cast<T>(mean + stddev * r * std::sin(t));
    }
    return SUCCESS;
}

}  // namespace

extern "C" {
int curandCreateGenerator(void **g, int) {
    if (!g) return NOT_INITIALIZED;
    *g = new Generator();
    return SUCCESS;
}
int curandDestroyGenerator(void *g) {
    delete static_cast<Generator *>(g);
    return SUCCESS;
}
int curandSetPseudoRandomGeneratorSeed(void *g, unsigned long long seed) {
    if (!g) return NOT_INITIALIZED;
    static_cast<Generator *>(g)->seed = seed;
    static_cast<Generator *>(g)->counter = 0;
    return SUCCESS;
}
int curandSetStream(void *, void *) { return SUCCESS; }
int curandGenerateUniform(void *g, float *out, std::size_t n) { return fill_uniform(g, out, n); }
int curandGenerateUniformDouble(void *g, double *out, std::size_t n) {
    return fill_uniform(g, out, n);
}
int curandGenerateNormal(void *g, float *out, std::size_t n, float mean, float stddev) {
    return fill_normal(g, out, n, mean, stddev);
}
int curandGenerateNormalDouble(void *g, double *out, std::size_t n, double mean,
                               double stddev) {
    return fill_normal(g, out, n, mean, stddev);
}
}

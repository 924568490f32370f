// headcode-emu: the cuRAND symbols a headcode `--features cuda` binary references
// (libcurand.so.10). candle creates a generator with every CUDA device; creating and
// seeding it succeed, and nothing here draws numbers.
extern "C" {
static int g_gen = 0;
int curandCreateGenerator(void **g, int) {
    *g = &g_gen;
    return 0;
}
int curandDestroyGenerator(void *) { return 0; }
int curandSetPseudoRandomGeneratorSeed(void *, unsigned long long) { return 0; }
int curandSetStream(void *, void *) { return 0; }
}

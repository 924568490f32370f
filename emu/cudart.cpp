// headcode-emu: the CUDA runtime symbols a headcode `--features cuda` binary references
// (libcudart.so.13). candle links nvcc-compiled host code that registers its fat binaries
// at start-up; registration is accepted and ignored, and launching through the runtime API
// is refused (cudaErrorNotSupported): only headcode's driver-API kernels are emulated.
extern "C" {

static void *g_fatbin_handle = nullptr;

void **__cudaRegisterFatBinary(void *) { return &g_fatbin_handle; }
void __cudaRegisterFatBinaryEnd(void **) {}
void __cudaUnregisterFatBinary(void **) {}
void __cudaRegisterFunction(void **, const char *, char *, const char *, int, void *, void *,
                            void *, void *, int *) {}
void __cudaRegisterVar(void **, char *, char *, const char *, int, unsigned long long, int, int) {}
unsigned __cudaPushCallConfiguration(unsigned long long, unsigned long long, unsigned long long,
                                     unsigned long long, unsigned long long, void *) {
    return 0;
}
int __cudaPopCallConfiguration(void *, void *, void *, void *) { return 801; }
int __cudaLaunchKernel_ptsz(const void *, unsigned long long, unsigned long long,
                            unsigned long long, unsigned long long, void **, unsigned long long,
                            void *) {
    return 801;
}
int __cudaGetKernel(void **, const void *) { return 801; }
int cudaGetDevice(int *d) {
    if (d) *d = 0;
    return 0;
}
int cudaFuncSetAttribute(const void *, int, int) { return 801; }

}  // extern "C"

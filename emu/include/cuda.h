// headcode-emu: candle's kernels include the driver header for CUDA_VERSION only.
#pragma once
#define CUDA_VERSION 13000

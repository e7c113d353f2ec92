// The CPU's float32 whole-layer kernels: the step loops of a layer in one parallel region
// (layer_forward.cpp, layer_backward.cpp). They need oneDNN's float32 batch-reduce GEMM in this
// torch (ATen's cpublas::brgemm) and OpenMP in the build: LSTM_EXT_HAS_CPU_LAYER_KERNELS says
// whether both are there; without them the driver runs the GEMMs through ATen.
#pragma once

#include <ATen/native/CPUBlas.h>

#include "core/lstm_layer.h"

#if defined(CPUBLAS_BRGEMM_F32F32F32) && defined(_OPENMP)
#define LSTM_EXT_HAS_CPU_LAYER_KERNELS 1
#else
#define LSTM_EXT_HAS_CPU_LAYER_KERNELS 0
#endif

namespace lstm_ext {
namespace cpu {

void layer_forward_float(const LayerForwardParams<float>& params);
void layer_backward_float(const LayerBackwardParams<float>& params);

}  // namespace cpu
}  // namespace lstm_ext

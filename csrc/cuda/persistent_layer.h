// The CUDA backend's float32 layer kernels (core/lstm_layer.h's FloatLayerKernels): the
// persistent forward kernel (persistent_forward.h), for the layers whose recurrent weights fit
// on chip, while LSTM_EXT_CUDA_PERSISTENT=1 asks for it.
#pragma once

#include <cstdint>

#include "core/lstm_layer.h"

namespace lstm_ext {
namespace cuda {

// Whether the persistent kernel takes a float32 layer of N rows, H, R and a projection or not
// on the current device (FloatLayerKernels::takes_forward). Off unless the environment variable
// LSTM_EXT_CUDA_PERSISTENT is 1, until its tests have passed on a GPU (docs/gpu.md).
bool takes_persistent_forward(int64_t rows, int64_t hidden_size, int64_t recurrent_size,
                              bool has_projection);

// A layer that takes_persistent_forward took, its input projected first (params.w_ih null).
void persistent_forward(const LayerForwardParams<float>& params);

}  // namespace cuda
}  // namespace lstm_ext

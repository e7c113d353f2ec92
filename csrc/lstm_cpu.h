// The CPU kernels that lstm_cpu.cpp (step kernels, registration) and lstm_cpu_layer.cpp (the
// whole-layer kernels) share.
#pragma once

#include <cstdint>

#include "lstm_layer.h"

namespace lstm_ext {
namespace cpu {

// The forward cell over rows [row_begin, row_end) x hidden columns [col_begin, col_end) of a
// float32 step (compiled for the widest vectors the machine has).
void forward_block_float(const ForwardStepParams<float>& params, int64_t row_begin,
                         int64_t row_end, int64_t col_begin, int64_t col_end);

// The backward cell over rows [row_begin, row_end) x hidden columns [col_begin, col_end).
void backward_block_float(const BackwardStepParams<float>& params, int64_t row_begin,
                          int64_t row_end, int64_t col_begin, int64_t col_end);

// Whether each thread's panels of W_ih are too large for its caches to keep from one step to
// the next: the input projection then runs on chunks of several steps (and tiles of more rows),
// so that the panels are read once per chunk rather than once per step.
bool streams_input_weights(int64_t input_size, int64_t hidden_size);

// The step loops of a whole float32 layer in one parallel region (lstm_cpu_layer.cpp); defined
// when this torch has oneDNN's float32 batch-reduce GEMM and the build has OpenMP.
void layer_forward_float(const LayerForwardParams<float>& params);
void layer_backward_float(const LayerBackwardParams<float>& params);

}  // namespace cpu
}  // namespace lstm_ext

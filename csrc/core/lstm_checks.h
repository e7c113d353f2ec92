// Argument checks of the layer operators, in one place. Every size the kernels index with is
// validated here, so no argument can lead to an out-of-bounds access; messages name the
// argument, the expected and the received shape, dtype or device.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Optional.h>

#include <cstdint>
#include <vector>

namespace lstm_ext {

struct LayerSizes {
  int64_t rows;                      // N = sum(batch_sizes)
  int64_t steps;                     // T
  int64_t batch;                     // B = batch_sizes[0]
  int64_t input_size;                // I
  int64_t hidden_size;               // H
  int64_t recurrent_size;            // R = P with projection, else H
  bool has_projection;
  std::vector<int64_t> batch_sizes;  // (T,) copied from the CPU tensor
};

LayerSizes check_forward_args(const char* op, const at::Tensor& input,
                              const at::Tensor& batch_sizes, const at::Tensor& h0,
                              const at::Tensor& c0, const at::Tensor& w_ih, const at::Tensor& w_hh,
                              const std::optional<at::Tensor>& b_ih,
                              const std::optional<at::Tensor>& b_hh,
                              const std::optional<at::Tensor>& w_hr);

// Checks the gradients and saved tensors of backward against the sizes of the forward arguments.
void check_backward_args(const char* op, const LayerSizes& sizes, const at::Tensor& input,
                         const at::Tensor& grad_output, const at::Tensor& grad_h_n,
                         const at::Tensor& grad_c_n, const at::Tensor& output,
                         const at::Tensor& gates, const at::Tensor& cells,
                         const at::Tensor& hidden);

}  // namespace lstm_ext

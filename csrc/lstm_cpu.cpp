// CPU step kernels (loops over lstm_math.h's element functions) and the CPU operator registration.
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "lstm_layer.h"

namespace lstm_ext {
namespace {

// Elements (rows x hidden columns) below which a step runs on one thread: a pointwise element
// costs a few nanoseconds, so smaller passes do not repay waking the other threads.
constexpr int64_t kParallelGrain = 16384;

// The row loops are compiled for several instruction sets and picked at load time, so that the
// polynomial exp of lstm_math.h runs in the widest vectors the machine has.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define LSTM_EXT_CPU_TARGETS \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define LSTM_EXT_CPU_TARGETS
#endif

// Runs element(row, col) over the flat element range [begin, end) of a (rows, H) step, row by
// row, so that the innermost loop runs over contiguous columns and vectorises.
#define LSTM_EXT_ELEMENT_LOOP(element)                                     \
  const int64_t H = params.hidden_size;                                    \
  for (int64_t row = begin / H; row * H < end; ++row) {                    \
    const int64_t col_begin = std::max<int64_t>(begin - row * H, 0);       \
    const int64_t col_end = std::min<int64_t>(end - row * H, H);           \
    _Pragma("omp simd") for (int64_t col = col_begin; col < col_end; ++col) { \
      element(params, row, col);                                           \
    }                                                                      \
  }

template <typename scalar_t>
void forward_elements(const ForwardStepParams<scalar_t>& params, int64_t begin, int64_t end) {
  LSTM_EXT_ELEMENT_LOOP((lstm_forward_element<scalar_t, at::opmath_type<scalar_t>>))
}

template <typename scalar_t>
void backward_elements(const BackwardStepParams<scalar_t>& params, int64_t begin, int64_t end) {
  LSTM_EXT_ELEMENT_LOOP((lstm_backward_element<scalar_t, at::opmath_type<scalar_t>>))
}

// Vectorised instantiations of the storage types worth it on the CPU.
template <>
LSTM_EXT_CPU_TARGETS void forward_elements<float>(const ForwardStepParams<float>& params,
                                                  int64_t begin, int64_t end) {
  LSTM_EXT_ELEMENT_LOOP((lstm_forward_element<float, float>))
}

template <>
LSTM_EXT_CPU_TARGETS void backward_elements<float>(const BackwardStepParams<float>& params,
                                                   int64_t begin, int64_t end) {
  LSTM_EXT_ELEMENT_LOOP((lstm_backward_element<float, float>))
}

template <typename scalar_t>
void forward_step_cpu(const ForwardStepParams<scalar_t>& params) {
  at::parallel_for(0, params.rows * params.hidden_size, kParallelGrain,
                   [&](int64_t begin, int64_t end) { forward_elements(params, begin, end); });
}

template <typename scalar_t>
void backward_step_cpu(const BackwardStepParams<scalar_t>& params) {
  at::parallel_for(0, params.rows * params.hidden_size, kParallelGrain,
                   [&](int64_t begin, int64_t end) { backward_elements(params, begin, end); });
}

const StepKernels kCpuStepKernels = {
    forward_step_cpu<float>,      forward_step_cpu<double>,
    forward_step_cpu<c10::Half>,  forward_step_cpu<c10::BFloat16>,
    backward_step_cpu<float>,     backward_step_cpu<double>,
    backward_step_cpu<c10::Half>, backward_step_cpu<c10::BFloat16>,
};

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
lstm_layer_forward_cpu(const at::Tensor& input, const at::Tensor& batch_sizes,
                       const at::Tensor& h0, const at::Tensor& c0, const at::Tensor& w_ih,
                       const at::Tensor& w_hh, const std::optional<at::Tensor>& b_ih,
                       const std::optional<at::Tensor>& b_hh,
                       const std::optional<at::Tensor>& w_hr, bool reverse,
                       bool save_for_backward) {
  return lstm_layer_forward(input, batch_sizes, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, reverse,
                            save_for_backward, kCpuStepKernels);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
lstm_layer_backward_cpu(const at::Tensor& grad_output, const at::Tensor& grad_h_n,
                        const at::Tensor& grad_c_n, const at::Tensor& input,
                        const at::Tensor& batch_sizes, const at::Tensor& h0,
                        const at::Tensor& c0, const at::Tensor& w_ih, const at::Tensor& w_hh,
                        const std::optional<at::Tensor>& w_hr, const at::Tensor& output,
                        const at::Tensor& gates, const at::Tensor& cells,
                        const at::Tensor& hidden, bool reverse) {
  return lstm_layer_backward(grad_output, grad_h_n, grad_c_n, input, batch_sizes, h0, c0, w_ih,
                             w_hh, w_hr, output, gates, cells, hidden, reverse, kCpuStepKernels);
}

}  // namespace

TORCH_LIBRARY_IMPL(lstm_ext, CPU, m) {
  m.impl("lstm_layer_forward", &lstm_layer_forward_cpu);
  m.impl("lstm_layer_backward", &lstm_layer_backward_cpu);
}

}  // namespace lstm_ext

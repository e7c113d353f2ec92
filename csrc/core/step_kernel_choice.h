// A Backend's step kernel of one storage type: StepKernelFor<scalar_t>, and
// with_step_kernel, which finds the one of a tensor's dtype.
#pragma once

#include <ATen/Dispatch.h>

#include "core/lstm_layer.h"

namespace lstm_ext {

template <typename scalar_t>
struct StepKernelFor;

#define LSTM_EXT_STEP_KERNEL_FOR(scalar_type, suffix)                                      \
  template <>                                                                              \
  struct StepKernelFor<scalar_type> {                                                      \
    static auto forward(const StepKernels& kernels) { return kernels.forward_##suffix; }   \
    static auto backward(const StepKernels& kernels) { return kernels.backward_##suffix; } \
  };
LSTM_EXT_STEP_KERNEL_FOR(float, float)
LSTM_EXT_STEP_KERNEL_FOR(double, double)
LSTM_EXT_STEP_KERNEL_FOR(c10::Half, half)
LSTM_EXT_STEP_KERNEL_FOR(c10::BFloat16, bfloat16)
#undef LSTM_EXT_STEP_KERNEL_FOR

// body(kernel) with the backend's forward (kForward) or backward step kernel of `input`'s dtype;
// a backend without one raises an error that names the operator `op`.
template <bool kForward, typename Body>
void with_step_kernel(const char* op, const at::Tensor& input, const StepKernels& kernels,
                      const Body& body) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "lstm_layer", [&] {
    const auto kernel = [&] {
      if constexpr (kForward) {
        return StepKernelFor<scalar_t>::forward(kernels);
      } else {
        return StepKernelFor<scalar_t>::backward(kernels);
      }
    }();
    TORCH_CHECK(kernel != nullptr, op, ": no ", input.scalar_type(), " kernel for ",
                input.device().type());
    body(kernel);
  });
}

}  // namespace lstm_ext

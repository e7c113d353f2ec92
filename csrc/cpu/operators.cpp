// The CPU's Backend (step kernels for every storage type, the float32 layer kernels, the
// policy, the buffer cache) and the registration of the CPU operators.
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>

#include "core/lstm_layer.h"
#include "cpu/buffers.h"
#include "cpu/isa.h"
#include "cpu/layer_kernels.h"
#include "cpu/policy.h"

namespace lstm_ext {
namespace {

// Elements (rows x hidden columns) below which a step runs on one thread: a pointwise element
// costs a few nanoseconds, so smaller passes do not repay waking the other threads.
constexpr int64_t kParallelGrain = 16384;

int64_t row_grain(int64_t hidden_size) {
  return std::max<int64_t>(1, kParallelGrain / std::max<int64_t>(hidden_size, 1));
}

// The element loop of a step of a storage type without microkernels of its own (float32's are
// the ISA level's).
template <typename Params, typename Element>
void element_loop(const Params& params, int64_t row_begin, int64_t row_end, Element element) {
  const Params local_params = params;  // kept in registers (see microkernel_templates.h)
  for (int64_t row = row_begin; row < row_end; ++row) {
#pragma omp simd
    for (int64_t col = 0; col < local_params.hidden_size; ++col) {
      element(local_params, row, col);
    }
  }
}

template <typename scalar_t>
void forward_step_cpu(const ForwardStepParams<scalar_t>& params) {
  at::parallel_for(0, params.rows, row_grain(params.hidden_size), [&](int64_t begin, int64_t end) {
    if constexpr (std::is_same_v<scalar_t, float>) {
      cpu::microkernels().forward_cell(params, begin, end, 0, params.hidden_size);
    } else {
      element_loop(params, begin, end, lstm_forward_element<scalar_t, at::opmath_type<scalar_t>>);
    }
  });
}

template <typename scalar_t>
void backward_step_cpu(const BackwardStepParams<scalar_t>& params) {
  at::parallel_for(0, params.rows, row_grain(params.hidden_size), [&](int64_t begin, int64_t end) {
    if constexpr (std::is_same_v<scalar_t, float>) {
      cpu::microkernels().backward_cell(params, begin, end, 0, params.hidden_size);
    } else {
      element_loop(params, begin, end, lstm_backward_element<scalar_t, at::opmath_type<scalar_t>>);
    }
  });
}

#if LSTM_EXT_HAS_CPU_LAYER_KERNELS
const FloatLayerKernels kCpuFloatLayerKernels = {cpu::layer_forward_float,
                                                 cpu::layer_backward_float};
constexpr const FloatLayerKernels* kCpuFloatLayer = &kCpuFloatLayerKernels;
#else
constexpr const FloatLayerKernels* kCpuFloatLayer = nullptr;
#endif

const Backend kCpuBackend = {
    {forward_step_cpu<float>, forward_step_cpu<double>, forward_step_cpu<c10::Half>,
     forward_step_cpu<c10::BFloat16>, backward_step_cpu<float>, backward_step_cpu<double>,
     backward_step_cpu<c10::Half>, backward_step_cpu<c10::BFloat16>},
    kCpuFloatLayer,
    &cpu::kCpuLayerPolicy,
    cpu::empty_buffer,
};

// The CPU operators need no device made current.
struct NoDeviceGuard {
  explicit NoDeviceGuard(const at::Tensor&) {}
};
using CpuOperators = LayerOperators<kCpuBackend, NoDeviceGuard>;

std::string cpu_isa() { return cpu::microkernels().isa; }

std::vector<std::string> supported_cpu_isas() { return cpu::supported_isas(); }

std::string select_cpu_isa(const std::string& name) { return cpu::select_isa(name); }

}  // namespace

TORCH_LIBRARY_IMPL(lstm_ext, CPU, m) {
  m.impl("lstm_layer_forward", &CpuOperators::forward);
  m.impl("lstm_layer_backward", &CpuOperators::backward);
}

TORCH_LIBRARY_FRAGMENT(lstm_ext, m) {
  // The ISA level of the CPU microkernels (cpu/isa.h): the one in use, those this processor
  // runs, and a choice of one for tests and benchmarks (returns the level chosen).
  m.def("cpu_isa() -> str", &cpu_isa);
  m.def("supported_cpu_isas() -> str[]", &supported_cpu_isas);
  m.def("select_cpu_isa(str isa) -> str", &select_cpu_isa);
}

}  // namespace lstm_ext

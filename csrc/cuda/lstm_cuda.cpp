// CUDA operator registration: the shared layer driver (lstm_layer.h) with the CUDA step kernels,
// run on the tensors' device and its current stream.
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "core/lstm_layer.h"
#include "cuda/lstm_step_kernels.h"

namespace lstm_ext {
namespace {

at::Tensor empty_cuda(at::IntArrayRef sizes, const at::TensorOptions& options) {
  return at::empty(sizes, options);
}

const Backend kCudaBackend = {
    {cuda::launch_forward_step, cuda::launch_forward_step, cuda::launch_forward_step,
     cuda::launch_forward_step, cuda::launch_backward_step, cuda::launch_backward_step,
     cuda::launch_backward_step, cuda::launch_backward_step},
    // cuBLAS runs the recurrent GEMMs (through ATen), the step kernels only the pointwise pass.
    /*float_layer=*/nullptr,
    // One input-projection GEMM for the whole layer: the GPU's caches are too small for chunks.
    /*policy=*/nullptr,
    empty_cuda,
};

// Makes the input's device current for the operator (its GEMMs, allocations and step kernels
// run there). An input not on CUDA gets none; the driver's checks then reject the mixed devices.
struct InputDeviceGuard {
  explicit InputDeviceGuard(const at::Tensor& input)
      : guard(input.is_cuda() ? std::optional<c10::Device>(input.device()) : std::nullopt) {}
  c10::cuda::OptionalCUDAGuard guard;
};
using CudaOperators = LayerOperators<kCudaBackend, InputDeviceGuard>;

}  // namespace

TORCH_LIBRARY_IMPL(lstm_ext, CUDA, m) {
  m.impl("lstm_layer_forward", &CudaOperators::forward);
  m.impl("lstm_layer_backward", &CudaOperators::backward);
}

}  // namespace lstm_ext

// CUDA operator registration: the shared layer driver (lstm_layer.h) with the CUDA step kernels,
// run on the tensors' device and its current stream.
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "cuda/lstm_step_kernels.h"
#include "lstm_layer.h"

namespace lstm_ext {
namespace {

const StepKernels kCudaStepKernels = {
    cuda::launch_forward_step,  cuda::launch_forward_step,  cuda::launch_forward_step,
    cuda::launch_forward_step,  cuda::launch_backward_step, cuda::launch_backward_step,
    cuda::launch_backward_step, cuda::launch_backward_step,
    // cuBLAS runs the recurrent GEMMs (through ATen), the step kernels only the pointwise pass.
    /*layer_forward_float=*/nullptr, /*layer_backward_float=*/nullptr, /*gemm_float=*/nullptr,
    // One input-projection GEMM for the whole layer: the GPU's caches are too small for chunks.
    /*projection_chunk_rows=*/nullptr, /*projects_input_first=*/nullptr,
};

// Makes the input's device current for the operator (its GEMMs, allocations and step kernels
// run there). An input not on CUDA gets none; the driver's checks then reject the mixed devices.
struct InputDeviceGuard {
  explicit InputDeviceGuard(const at::Tensor& input)
      : guard(input.is_cuda() ? std::optional<c10::Device>(input.device()) : std::nullopt) {}
  c10::cuda::OptionalCUDAGuard guard;
};
using CudaOperators = LayerOperators<kCudaStepKernels, InputDeviceGuard>;

}  // namespace

TORCH_LIBRARY_IMPL(lstm_ext, CUDA, m) {
  m.impl("lstm_layer_forward", &CudaOperators::forward);
  m.impl("lstm_layer_backward", &CudaOperators::backward);
}

}  // namespace lstm_ext

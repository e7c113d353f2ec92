// CUDA operator registration: the shared layer driver (lstm_layer.h) with the CUDA step kernels
// and the persistent forward kernel, run on the tensors' device and its current stream.
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <cstdint>
#include <limits>

#include "core/lstm_layer.h"
#include "cuda/lstm_step_kernels.h"
#include "cuda/persistent_layer.h"

namespace lstm_ext {
namespace {

at::Tensor empty_cuda(at::IntArrayRef sizes, const at::TensorOptions& options) {
  return at::empty(sizes, options);
}

// The persistent forward kernel where it takes the layer (persistent_layer.h); elsewhere, and in
// every backward (a persistent backward is not written yet), cuBLAS runs the recurrent GEMMs
// through ATen and the step kernels the pointwise pass. 16-bit layers keep their type: cuBLAS
// has 16-bit GEMMs.
const FloatLayerKernels kCudaFloatLayer = {cuda::persistent_forward, /*backward=*/nullptr,
                                           cuda::takes_persistent_forward,
                                           /*widens_16bit_layers=*/false};

GemmFloat aten_gemm(int64_t /*multiply_adds*/) { return nullptr; }

// One input-projection GEMM for the whole layer: the GPU's caches are too small for chunks.
int64_t whole_layer_chunk(int64_t /*input_size*/, int64_t /*hidden_size*/,
                          int64_t /*element_size*/) {
  return std::numeric_limits<int64_t>::max();
}

// The persistent kernel reads every step's input projection from the gates.
bool projects_input_first(int64_t /*rows*/, int64_t /*max_step_rows*/, int64_t /*input_size*/,
                          int64_t /*hidden_size*/, bool /*save_for_backward*/) {
  return true;
}

const LayerPolicy kCudaPolicy = {aten_gemm, whole_layer_chunk, projects_input_first};

const Backend kCudaBackend = {
    {cuda::launch_forward_step, cuda::launch_forward_step, cuda::launch_forward_step,
     cuda::launch_forward_step, cuda::launch_backward_step, cuda::launch_backward_step,
     cuda::launch_backward_step, cuda::launch_backward_step},
    &kCudaFloatLayer,
    &kCudaPolicy,
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

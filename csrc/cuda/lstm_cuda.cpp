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
    /*fused_forward_float=*/nullptr, /*fused_backward_float=*/nullptr,
    /*input_projection_float=*/nullptr,
    /*input_projection_min_rows=*/0,
    // One input-projection GEMM for the whole layer: the GPU's caches are too small for chunks.
    /*projection_chunk_bytes=*/0,
};

// The device made current for the operator (its GEMMs, allocations and step kernels run there):
// input's. An input not on CUDA gets none; the driver's checks then reject the mixed devices.
std::optional<c10::Device> cuda_device_of(const at::Tensor& input) {
  return input.is_cuda() ? std::optional<c10::Device>(input.device()) : std::nullopt;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
lstm_layer_forward_cuda(const at::Tensor& input, const at::Tensor& batch_sizes,
                        const at::Tensor& h0, const at::Tensor& c0, const at::Tensor& w_ih,
                        const at::Tensor& w_hh, const std::optional<at::Tensor>& b_ih,
                        const std::optional<at::Tensor>& b_hh,
                        const std::optional<at::Tensor>& w_hr, bool reverse,
                        bool save_for_backward) {
  const c10::cuda::OptionalCUDAGuard device_guard(cuda_device_of(input));
  return lstm_layer_forward(input, batch_sizes, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, reverse,
                            save_for_backward, kCudaStepKernels);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
lstm_layer_backward_cuda(const at::Tensor& grad_output, const at::Tensor& grad_h_n,
                         const at::Tensor& grad_c_n, const at::Tensor& input,
                         const at::Tensor& batch_sizes, const at::Tensor& h0,
                         const at::Tensor& c0, const at::Tensor& w_ih, const at::Tensor& w_hh,
                         const std::optional<at::Tensor>& w_hr, const at::Tensor& output,
                         const at::Tensor& gates, const at::Tensor& cells,
                         const at::Tensor& hidden, bool reverse) {
  const c10::cuda::OptionalCUDAGuard device_guard(cuda_device_of(input));
  return lstm_layer_backward(grad_output, grad_h_n, grad_c_n, input, batch_sizes, h0, c0, w_ih,
                             w_hh, w_hr, output, gates, cells, hidden, reverse, kCudaStepKernels);
}

}  // namespace

TORCH_LIBRARY_IMPL(lstm_ext, CUDA, m) {
  m.impl("lstm_layer_forward", &lstm_layer_forward_cuda);
  m.impl("lstm_layer_backward", &lstm_layer_backward_cuda);
}

}  // namespace lstm_ext

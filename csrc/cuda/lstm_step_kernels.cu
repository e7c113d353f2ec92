// CUDA step kernels: the fused pointwise pass of a forward or backward step, one thread per
// element (or per aligned vector of kVectorWidth consecutive columns). The math and the indexing
// are lstm_math.h's element and vector functions, the ones the CPU loop runs.
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdint>
#include <limits>

#include "core/lstm_math.h"
#include "cuda/lstm_step_kernels.h"

namespace lstm_ext {
namespace cuda {
namespace {

// Small blocks spread the few thousand elements of a typical step over many multiprocessors; the
// grid covers the device with kBlocksPerMultiprocessor blocks each and larger steps loop.
constexpr int kThreadsPerBlock = 128;
constexpr int kBlocksPerMultiprocessor = 8;

// Columns per thread of the vector kernels: 16-byte loads for float and double, 8 for halves
// (more columns per thread would leave the multiprocessors idle on the usual step sizes).
template <typename scalar_t>
constexpr int kVectorWidth = sizeof(scalar_t) >= 8 ? 2 : 4;

// Work item `item` of a step with `items_per_row` items per row: its row and first column.
// index_t is 32-bit when the step's item count allows, sparing 64-bit divisions.
template <int kWidth, typename index_t>
__device__ __forceinline__ void item_position(index_t item, index_t items_per_row, int64_t& row,
                                              int64_t& col) {
  const index_t item_row = item / items_per_row;
  row = item_row;
  col = static_cast<int64_t>(item - item_row * items_per_row) * kWidth;
}

// One item of a step: lstm_math.h's element function (kWidth 1) or its vector variant.
template <int kWidth, typename scalar_t>
__device__ __forceinline__ void step_item(const ForwardStepParams<scalar_t>& params, int64_t row,
                                          int64_t col) {
  using acc_t = at::opmath_type<scalar_t>;
  if constexpr (kWidth == 1) {
    lstm_forward_element<scalar_t, acc_t>(params, row, col);
  } else {
    lstm_forward_vector<scalar_t, acc_t, kWidth>(params, row, col);
  }
}

template <int kWidth, typename scalar_t>
__device__ __forceinline__ void step_item(const BackwardStepParams<scalar_t>& params, int64_t row,
                                          int64_t col) {
  using acc_t = at::opmath_type<scalar_t>;
  if constexpr (kWidth == 1) {
    lstm_backward_element<scalar_t, acc_t>(params, row, col);
  } else {
    lstm_backward_vector<scalar_t, acc_t, kWidth>(params, row, col);
  }
}

// A forward or backward step (Params): a grid-stride loop over its items.
template <typename Params, int kWidth, typename index_t>
__global__ void __launch_bounds__(kThreadsPerBlock)
    step_kernel(const Params params, index_t items_per_row, index_t items) {
  const index_t stride = static_cast<index_t>(gridDim.x) * kThreadsPerBlock;
  for (index_t item = static_cast<index_t>(blockIdx.x) * kThreadsPerBlock + threadIdx.x;
       item < items; item += stride) {
    int64_t row, col;
    item_position<kWidth>(item, items_per_row, row, col);
    step_item<kWidth>(params, row, col);
  }
}

// Multiprocessors of the current device, queried once per device.
int multiprocessor_count() {
  static std::array<std::atomic<int>, C10_COMPILE_TIME_MAX_GPUS> counts{};
  const c10::DeviceIndex device = c10::cuda::current_device();
  int count = counts[device].load(std::memory_order_relaxed);
  if (count == 0) {
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device));
    counts[device].store(count, std::memory_order_relaxed);
  }
  return count;
}

template <int kWidth, typename scalar_t>
bool vector_aligned(const scalar_t* pointer) {
  return reinterpret_cast<std::uintptr_t>(pointer) % (kWidth * sizeof(scalar_t)) == 0;
}

template <int kWidth, typename scalar_t>
bool fits_vector_kernel(const ForwardStepParams<scalar_t>& p) {
  return p.hidden_size % kWidth == 0 && p.hidden_stride % kWidth == 0 &&
         vector_aligned<kWidth>(p.gates) && vector_aligned<kWidth>(p.prev_cell) &&
         vector_aligned<kWidth>(p.initial_cell) && vector_aligned<kWidth>(p.cell) &&
         vector_aligned<kWidth>(p.hidden);
}

template <int kWidth, typename scalar_t>
bool fits_vector_kernel(const BackwardStepParams<scalar_t>& p) {
  return p.hidden_size % kWidth == 0 && p.grad_hidden_stride % kWidth == 0 &&
         vector_aligned<kWidth>(p.gates) && vector_aligned<kWidth>(p.cell) &&
         vector_aligned<kWidth>(p.prev_cell) && vector_aligned<kWidth>(p.initial_cell) &&
         vector_aligned<kWidth>(p.grad_hidden) &&
         vector_aligned<kWidth>(p.grad_hidden_recurrent) &&  // nullptr is aligned
         vector_aligned<kWidth>(p.grad_cell) && vector_aligned<kWidth>(p.grad_gates);
}

// Enqueues one of a step kernel's two index types over the step's rows x (H / kWidth) items.
template <int kWidth, typename Params>
void launch_step(const Params& params, void (*kernel_32bit)(Params, uint32_t, uint32_t),
                 void (*kernel_64bit)(Params, int64_t, int64_t)) {
  const int64_t items_per_row = params.hidden_size / kWidth;
  const int64_t items = params.rows * items_per_row;
  if (items == 0) return;
  const int64_t grid_limit =
      static_cast<int64_t>(multiprocessor_count()) * kBlocksPerMultiprocessor;
  const int64_t blocks = std::min((items + kThreadsPerBlock - 1) / kThreadsPerBlock, grid_limit);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  // 32-bit indices when no item index, nor one past it by the grid stride, can wrap.
  if (items + blocks * kThreadsPerBlock <= std::numeric_limits<uint32_t>::max()) {
    kernel_32bit<<<blocks, kThreadsPerBlock, 0, stream>>>(
        params, static_cast<uint32_t>(items_per_row), static_cast<uint32_t>(items));
  } else {
    kernel_64bit<<<blocks, kThreadsPerBlock, 0, stream>>>(params, items_per_row, items);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// Runs a step (StepParams = ForwardStepParams or BackwardStepParams) with the vector kernel
// when its sizes and pointers allow, else with the element kernel.
template <template <typename> class StepParams, typename scalar_t>
void run_step(const StepParams<scalar_t>& params) {
  using Params = StepParams<scalar_t>;
  constexpr int kWidth = kVectorWidth<scalar_t>;
  if (fits_vector_kernel<kWidth>(params)) {
    launch_step<kWidth>(params, step_kernel<Params, kWidth, uint32_t>,
                        step_kernel<Params, kWidth, int64_t>);
  } else {
    launch_step<1>(params, step_kernel<Params, 1, uint32_t>, step_kernel<Params, 1, int64_t>);
  }
}

}  // namespace

void launch_forward_step(const ForwardStepParams<float>& params) { run_step(params); }
void launch_forward_step(const ForwardStepParams<double>& params) { run_step(params); }
void launch_forward_step(const ForwardStepParams<c10::Half>& params) { run_step(params); }
void launch_forward_step(const ForwardStepParams<c10::BFloat16>& params) { run_step(params); }

void launch_backward_step(const BackwardStepParams<float>& params) { run_step(params); }
void launch_backward_step(const BackwardStepParams<double>& params) { run_step(params); }
void launch_backward_step(const BackwardStepParams<c10::Half>& params) { run_step(params); }
void launch_backward_step(const BackwardStepParams<c10::BFloat16>& params) { run_step(params); }

}  // namespace cuda
}  // namespace lstm_ext

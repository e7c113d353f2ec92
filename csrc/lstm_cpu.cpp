// CPU step kernels (loops over lstm_math.h's element functions) and the CPU operator registration.
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/native/CPUBlas.h>
#include <torch/library.h>

#include "lstm_layer.h"

namespace lstm_ext {
namespace {

// Elements (rows x hidden columns) below which a step runs on one thread: a pointwise element
// costs a few nanoseconds, so smaller passes do not repay waking the other threads.
constexpr int64_t kParallelGrain = 16384;

// Multiply-adds of a step's recurrent GEMM below which it runs on one thread (about 10 us).
constexpr int64_t kParallelGemmGrain = int64_t(1) << 20;

// Least hidden units per task of the fused step, and the multiple its blocks are rounded to (a
// 64-byte line of float32 columns).
constexpr int64_t kHiddenBlock = 64;
constexpr int64_t kVectorColumns = 16;

// The element loops are compiled for several instruction sets and picked at load time, so that
// the polynomial exp of lstm_math.h runs in the widest vectors the machine has.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define LSTM_EXT_CPU_TARGETS \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define LSTM_EXT_CPU_TARGETS
#endif

// Runs element(params, row, col) over rows [row_begin, row_end) x columns [col_begin, col_end)
// of a step; the innermost loop runs over contiguous columns and vectorises.
#define LSTM_EXT_ELEMENT_LOOP(element)                                   \
  for (int64_t row = row_begin; row < row_end; ++row) {                  \
    _Pragma("omp simd") for (int64_t col = col_begin; col < col_end; ++col) { \
      element(params, row, col);                                         \
    }                                                                    \
  }

template <typename scalar_t>
void forward_block(const ForwardStepParams<scalar_t>& params, int64_t row_begin, int64_t row_end,
                   int64_t col_begin, int64_t col_end) {
  LSTM_EXT_ELEMENT_LOOP((lstm_forward_element<scalar_t, at::opmath_type<scalar_t>>))
}

template <typename scalar_t>
void backward_block(const BackwardStepParams<scalar_t>& params, int64_t row_begin,
                    int64_t row_end, int64_t col_begin, int64_t col_end) {
  LSTM_EXT_ELEMENT_LOOP((lstm_backward_element<scalar_t, at::opmath_type<scalar_t>>))
}

template <>
LSTM_EXT_CPU_TARGETS void forward_block<float>(const ForwardStepParams<float>& params,
                                               int64_t row_begin, int64_t row_end,
                                               int64_t col_begin, int64_t col_end) {
  LSTM_EXT_ELEMENT_LOOP((lstm_forward_element<float, float>))
}

template <>
LSTM_EXT_CPU_TARGETS void backward_block<float>(const BackwardStepParams<float>& params,
                                                int64_t row_begin, int64_t row_end,
                                                int64_t col_begin, int64_t col_end) {
  LSTM_EXT_ELEMENT_LOOP((lstm_backward_element<float, float>))
}

// Row grain of a pointwise pass over (rows, H) elements.
int64_t row_grain(int64_t hidden_size) {
  return std::max<int64_t>(1, kParallelGrain / std::max<int64_t>(hidden_size, 1));
}

template <typename scalar_t>
void forward_step_cpu(const ForwardStepParams<scalar_t>& params) {
  at::parallel_for(0, params.rows, row_grain(params.hidden_size), [&](int64_t begin, int64_t end) {
    forward_block(params, begin, end, 0, params.hidden_size);
  });
}

template <typename scalar_t>
void backward_step_cpu(const BackwardStepParams<scalar_t>& params) {
  at::parallel_for(0, params.rows, row_grain(params.hidden_size), [&](int64_t begin, int64_t end) {
    backward_block(params, begin, end, 0, params.hidden_size);
  });
}

#ifdef CPUBLAS_BRGEMM_F32F32F32
// The recurrent GEMM and the pointwise pass of a float32 step in one parallel region. Each task
// owns a block of hidden units: it adds h_{t-1} W_hh^T into the four gate column blocks of those
// units with oneDNN's batch-reduce GEMM kernel (through at::native::cpublas::brgemm), then
// applies the cell to them while they are in cache. Tasks share no output, so no barrier
// separates the GEMM from the pointwise pass.
void fused_forward_step_cpu(const ForwardStepParams<float>& params,
                            const RecurrentGemmParams<float>& recurrent) {
  const int64_t H = params.hidden_size;
  const int64_t R = recurrent.recurrent_size;
  const int64_t rows = params.rows;
  const int64_t carried = params.carried_rows;
  // A step too small to share runs as one block: its GEMM as one brgemm call over all 4H gate
  // columns, which are contiguous. Otherwise each thread takes one block of hidden units (at
  // least kHiddenBlock wide): wide blocks stream the rows of W_hh^T in long contiguous runs,
  // which matters when few rows make the step bound by reading W_hh.
  const bool parallel = rows * 4 * H * R >= kParallelGemmGrain;
  const int64_t threads = at::get_num_threads();
  const int64_t block_size =
      !parallel ? H
                : std::max(kHiddenBlock, (H + threads - 1) / threads + kVectorColumns - 1) /
                      kVectorColumns * kVectorColumns;
  const int64_t blocks = (H + block_size - 1) / block_size;
  // C (rows, cols) += h_{t-1} W_hh^T restricted to the gate columns starting at `column`.
  auto add_recurrent = [&](int64_t column, int64_t cols) {
    const float* w_block = recurrent.w_hh_t + column;
    float* gate_block = params.gates + column;
    if (carried > 0) {
      at::native::cpublas::brgemm(carried, cols, R, R, 4 * H, 4 * H, /*add_C=*/true,
                                  recurrent.prev_hidden, w_block, gate_block, false);
    }
    if (rows > carried) {
      at::native::cpublas::brgemm(rows - carried, cols, R, R, 4 * H, 4 * H, /*add_C=*/true,
                                  recurrent.initial_hidden + carried * R, w_block,
                                  gate_block + carried * 4 * H, false);
    }
  };
  at::parallel_for(0, blocks, parallel ? 1 : blocks, [&](int64_t block_begin, int64_t block_end) {
    for (int64_t block = block_begin; block < block_end; ++block) {
      const int64_t col_begin = block * block_size;
      const int64_t cols = std::min(block_size, H - col_begin);
      if (cols == H) {
        add_recurrent(0, 4 * H);
      } else {
        for (int64_t gate = 0; gate < 4; ++gate) add_recurrent(gate * H + col_begin, cols);
      }
      forward_block(params, 0, rows, col_begin, col_begin + cols);
    }
    at::native::cpublas::brgemm_release(/*is_vnni=*/false);
  });
}

// The pointwise pass of a float32 backward step, then grad_prev_hidden = grad_gates W_hh, each
// parallel over its own output columns (the GEMM reads every gate column, hence two regions).
void fused_backward_step_cpu(const BackwardStepParams<float>& params,
                             const RecurrentGradGemmParams<float>& recurrent) {
  const int64_t H = params.hidden_size;
  const int64_t R = recurrent.recurrent_size;
  const int64_t rows = params.rows;
  backward_step_cpu(params);
  const int64_t blocks = (R + kHiddenBlock - 1) / kHiddenBlock;
  const int64_t grain = rows * 4 * H * R >= kParallelGemmGrain ? 1 : blocks;
  at::parallel_for(0, blocks, grain, [&](int64_t block_begin, int64_t block_end) {
    const int64_t col_begin = block_begin * kHiddenBlock;
    const int64_t cols = std::min(block_end * kHiddenBlock, R) - col_begin;
    at::native::cpublas::brgemm(rows, cols, 4 * H, 4 * H, R, R, /*add_C=*/false,
                                params.grad_gates, recurrent.w_hh + col_begin,
                                recurrent.grad_prev_hidden + col_begin, false);
    at::native::cpublas::brgemm_release(/*is_vnni=*/false);
  });
}

// Tile of the input projection's output per brgemm call: 64 rows x 256 gate columns (measured
// on a 2-core Zen 4: 204 GFLOP/s against MKL's 180 at 6400 x 512 x 2048).
constexpr int64_t kProjectionRowTile = 64;
constexpr int64_t kProjectionColTile = 256;

// gates = input W_ih^T + bias over tiles of the output, parallel across tiles; each tile is
// initialised with the bias while in cache, then accumulated into by one brgemm call.
void input_projection_cpu(const InputProjectionParams<float>& params) {
  const int64_t M = params.rows;
  const int64_t N = params.gate_size;
  const int64_t K = params.input_size;
  const int64_t row_tiles = (M + kProjectionRowTile - 1) / kProjectionRowTile;
  const int64_t col_tiles = (N + kProjectionColTile - 1) / kProjectionColTile;
  const int64_t tiles = row_tiles * col_tiles;
  const int64_t grain = M * N * std::max<int64_t>(K, 1) >= kParallelGemmGrain ? 1 : tiles;
  at::parallel_for(0, tiles, grain, [&](int64_t tile_begin, int64_t tile_end) {
    for (int64_t tile = tile_begin; tile < tile_end; ++tile) {
      // Row tiles outermost: a thread's consecutive tiles share their rows of the input.
      const int64_t row_begin = (tile / col_tiles) * kProjectionRowTile;
      const int64_t col_begin = (tile % col_tiles) * kProjectionColTile;
      const int64_t rows = std::min(kProjectionRowTile, M - row_begin);
      const int64_t cols = std::min(kProjectionColTile, N - col_begin);
      float* gate_tile = params.gates + row_begin * N + col_begin;
      for (int64_t row = 0; row < rows; ++row) {
        float* gate_row = gate_tile + row * N;
        for (int64_t col = 0; col < cols; ++col) {
          gate_row[col] = params.bias != nullptr ? params.bias[col_begin + col] : 0.0f;
        }
      }
      if (K > 0) {
        at::native::cpublas::brgemm(rows, cols, K, K, N, N, /*add_C=*/true,
                                    params.input + row_begin * K, params.w_ih_t + col_begin,
                                    gate_tile, false);
      }
    }
    at::native::cpublas::brgemm_release(/*is_vnni=*/false);
  });
}

constexpr auto kFusedForwardFloat = fused_forward_step_cpu;
constexpr auto kInputProjectionFloat = input_projection_cpu;
constexpr auto kFusedBackwardFloat = fused_backward_step_cpu;
#else
// This torch has no float32 batch-reduce GEMM: the driver runs the recurrent GEMMs through ATen.
constexpr void (*kFusedForwardFloat)(const ForwardStepParams<float>&,
                                     const RecurrentGemmParams<float>&) = nullptr;
constexpr void (*kFusedBackwardFloat)(const BackwardStepParams<float>&,
                                      const RecurrentGradGemmParams<float>&) = nullptr;
constexpr void (*kInputProjectionFloat)(const InputProjectionParams<float>&) = nullptr;
#endif

const StepKernels kCpuStepKernels = {
    forward_step_cpu<float>,      forward_step_cpu<double>,
    forward_step_cpu<c10::Half>,  forward_step_cpu<c10::BFloat16>,
    backward_step_cpu<float>,     backward_step_cpu<double>,
    backward_step_cpu<c10::Half>, backward_step_cpu<c10::BFloat16>,
    kFusedForwardFloat,           kFusedBackwardFloat,
    kInputProjectionFloat,
    /*input_projection_min_rows=*/2048,
    /*projection_chunk_bytes=*/int64_t(2) << 20,
};

// The CPU operators need no device made current.
struct NoDeviceGuard {
  explicit NoDeviceGuard(const at::Tensor&) {}
};
using CpuOperators = LayerOperators<kCpuStepKernels, NoDeviceGuard>;

}  // namespace

TORCH_LIBRARY_IMPL(lstm_ext, CPU, m) {
  m.impl("lstm_layer_forward", &CpuOperators::forward);
  m.impl("lstm_layer_backward", &CpuOperators::backward);
}

}  // namespace lstm_ext

// CPU step kernels (loops over lstm_math.h's element functions) and the CPU operator registration.
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/native/CPUBlas.h>
#include <torch/library.h>

#include <cstdlib>
#include <string_view>

#include "lstm_cpu.h"
#include "lstm_cpu_gemm.h"
#include "lstm_layer.h"

// The element loops are compiled for several instruction sets and picked at load time, so that
// the polynomial exp of lstm_math.h runs in the widest vectors the machine has.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define LSTM_EXT_CPU_TARGETS \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define LSTM_EXT_CPU_TARGETS
#endif

// Runs element(params, row, col) over rows [row_begin, row_end) x columns [col_begin, col_end)
// of a step; the innermost loop runs over contiguous columns and vectorises. It works on a local
// copy of the params: the compiler keeps a local's fields in registers, whereas the caller's
// struct could alias the floats the loop stores, so its fields would be reloaded after every
// store, and those reloads stall whenever the struct's stack address and a buffer's share their
// offset within 4 KB (a 15-30% swing with the size of the environment, measured).
#define LSTM_EXT_ELEMENT_LOOP(element)                                             \
  const auto local_params = params;                                                \
  for (int64_t row = row_begin; row < row_end; ++row) {                            \
    _Pragma("omp simd") for (int64_t col = col_begin; col < col_end; ++col) {      \
      element(local_params, row, col);                                             \
    }                                                                              \
  }

namespace lstm_ext {
namespace cpu {

LSTM_EXT_CPU_TARGETS void forward_block_float(const ForwardStepParams<float>& params,
                                              int64_t row_begin, int64_t row_end,
                                              int64_t col_begin, int64_t col_end) {
  LSTM_EXT_ELEMENT_LOOP((lstm_forward_element<float, float>))
}

LSTM_EXT_CPU_TARGETS void backward_block_float(const BackwardStepParams<float>& params,
                                               int64_t row_begin, int64_t row_end,
                                               int64_t col_begin, int64_t col_end) {
  LSTM_EXT_ELEMENT_LOOP((lstm_backward_element<float, float>))
}

// Over 1 MB of W_ih panels per thread (I x 4H / threads floats), a core's L2 on the Xeons and
// Zen 4 we measure on. (With 2 MB, I=H=512 kept one-step chunks: alternated on a 2-core Xeon,
// its forwards at B=64 T=100 take 0.95-0.96x the time with 1 MB, with P=128 0.95x; B=16 and
// T=25 0.99-1.01x.)
bool streams_input_weights(int64_t input_size, int64_t hidden_size) {
  constexpr int64_t kCachedPanelBytes = int64_t(1) << 20;
  const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
  return input_size * 4 * hidden_size * static_cast<int64_t>(sizeof(float)) / threads >
         kCachedPanelBytes;
}

}  // namespace cpu

namespace {

// Elements (rows x hidden columns) below which a step runs on one thread: a pointwise element
// costs a few nanoseconds, so smaller passes do not repay waking the other threads.
constexpr int64_t kParallelGrain = 16384;

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
void forward_block<float>(const ForwardStepParams<float>& params, int64_t row_begin,
                          int64_t row_end, int64_t col_begin, int64_t col_end) {
  cpu::forward_block_float(params, row_begin, row_end, col_begin, col_end);
}

template <>
void backward_block<float>(const BackwardStepParams<float>& params, int64_t row_begin,
                           int64_t row_end, int64_t col_begin, int64_t col_end) {
  cpu::backward_block_float(params, row_begin, row_end, col_begin, col_end);
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

#if defined(CPUBLAS_BRGEMM_F32F32F32) && defined(_OPENMP)
constexpr auto kLayerForwardFloat = cpu::layer_forward_float;
constexpr auto kLayerBackwardFloat = cpu::layer_backward_float;

// MKL's sgemm (ATen's mm) for large products on Intel processors, where it ran the GEMMs after
// the backward loop 1.2-1.7x faster than parallel_gemm (2-core Xeon, 6400 x 4096 @ 4096 x 512 and
// the like: 245 vs 187 GFLOP/s for dX, 234 vs 139 for dW at I=H=1024; whole trainings of 0.84G
// multiply-adds after the loop up to 10% faster), parallel_gemm for smaller ones there (B=1 at
// T=100 with H=128, 256 or 512: 3-7% faster with it) and for all elsewhere: on AMD, where MKL
// does not pick its fastest kernels, 205-215 vs 180-185 GFLOP/s.
// LSTM_EXT_CPU_GEMM=lstm_ext or =aten overrides the choice (the tests run both).
GemmFloat cpu_gemm_float(int64_t multiply_adds) {
  constexpr int64_t kMinMklMultiplyAdds = int64_t(1) << 28;
#if defined(__x86_64__) && defined(__GNUC__)
  static const bool mkl_is_faster = __builtin_cpu_is("intel");
#else
  static const bool mkl_is_faster = false;
#endif
  const char* choice = std::getenv("LSTM_EXT_CPU_GEMM");
  if (choice == nullptr) {
    return mkl_is_faster && multiply_adds >= kMinMklMultiplyAdds ? nullptr : cpu::parallel_gemm;
  }
  const std::string_view name(choice);
  TORCH_CHECK(name == "lstm_ext" || name == "aten",
              "LSTM_EXT_CPU_GEMM must be lstm_ext or aten, got ", name);
  return name == "lstm_ext" ? cpu::parallel_gemm : nullptr;
}
constexpr auto kGemmFloat = cpu_gemm_float;

// Steps of at most this many rows, with W_ih of at least this many bytes, have the driver
// project their input first (see projects_input_first); so do steps of at least
// kMinRowsProjectedFirstByMkl rows where MKL is the GEMM of that size and the W_ih panels
// stream. Where the gates are not saved anyway (inference), only up to this many bytes of them:
// the gates of all steps, N x 4H, where the kernel's chunks hold a few MB (an inference over
// long sequences should not need as much memory as a training step).
constexpr int64_t kMaxRowsProjectedFirst = 16;
constexpr int64_t kMinInputWeightBytesProjectedFirst = int64_t(512) << 10;
constexpr int64_t kMinRowsProjectedFirstByMkl = 32;
constexpr int64_t kMaxUnsavedGatesProjectedFirst = int64_t(128) << 20;

// Whether the driver projects a layer's input through ATen before the layer kernel, rather than
// the kernel chunk by chunk through brgemm, which needs W_ih transposed into its panels first.
// ATen's GEMM reads W_ih as stored, and when few rows share it that transpose, once per call,
// costs more than the GEMM: alternated on a 2-core Xeon, B=1 T=25 I=H=1024 forward 0.86x the
// time, with P=256 0.75x, training 0.71x; B=1 T=100 H=512 0.95x; B=4 0.91x; B=16 T=25 I=H=1024
// 0.91x, T=100 H=512 0.97x; B=1 H=256 training 0.95x. A small W_ih transposes in no time (B=1
// I=64 H=128: 1.03x the time with ATen's call first).
// Where MKL is the GEMM of that size (Intel), it also projects the input of larger steps first
// when a training forward keeps every gate anyway (B=64 H=512 0.93x the time, I=512 H=1024
// P=256 0.94x, B=256 H=256 0.95x), and in inference when the W_ih panels stream from beyond L2
// (see streams_input_weights), where the kernel's projection reads them once per chunk of steps
// and MKL's runs at its full rate over all rows: alternated on a 2-core Xeon, T=100 B=64 I=H=512
// forward 0.88-0.93x the time (three runs), with P=128 0.89x, I=512 H=1024 P=256 0.92-0.97x,
// I=H=1024 0.96x, B=32 I=H=512 0.93x; but B=16 (I=H=1024 T=25, I=H=512 T=100) 1.01-1.03x, and
// I=H=256 (panels in L2) at B=32 1.04x, B=64 0.98-0.99x, B=256 0.97-0.98x (within this VM's
// noise): smaller steps and cached panels keep the chunks, whose gates are read back from the
// caches.
bool projects_input_first(int64_t rows, int64_t max_step_rows, int64_t input_size,
                          int64_t hidden_size, bool save_for_backward) {
  constexpr int64_t kFloatBytes = sizeof(float);
  const int64_t gates = rows * 4 * hidden_size;
  const bool mkl_is_the_gemm = cpu_gemm_float(gates * input_size) == nullptr;
  if (mkl_is_the_gemm && save_for_backward) return true;
  if (!save_for_backward && gates * kFloatBytes > kMaxUnsavedGatesProjectedFirst) return false;
  if (mkl_is_the_gemm && max_step_rows >= kMinRowsProjectedFirstByMkl &&
      cpu::streams_input_weights(input_size, hidden_size)) {
    return true;
  }
  return max_step_rows <= kMaxRowsProjectedFirst &&
         4 * hidden_size * input_size * kFloatBytes >= kMinInputWeightBytesProjectedFirst;
}
constexpr auto kProjectsInputFirst = projects_input_first;
#else
// This torch has no float32 batch-reduce GEMM (or the build no OpenMP): the driver runs the
// GEMMs through ATen.
constexpr void (*kLayerForwardFloat)(const LayerForwardParams<float>&) = nullptr;
constexpr void (*kLayerBackwardFloat)(const LayerBackwardParams<float>&) = nullptr;
constexpr GemmFloat (*kGemmFloat)(int64_t) = nullptr;
constexpr bool (*kProjectsInputFirst)(int64_t, int64_t, int64_t, int64_t, bool) = nullptr;
#endif

// Gates per input-projection chunk: with two threads, each one's columns of a 512 KB chunk fill
// a quarter of its L2 cache (Zen 4's 1 MB), leaving room for its weight panels (1 MB chunks ran
// 1.4x slower at B=64, H=256). When the threads' W_ih panels stream from beyond L2 anyway,
// 4 MB chunks read them once per several steps instead of once per step (B=16, I=H=1024
// forward: 1.25x faster; B=64 T=100 I=H=512 1.04-1.05x, B=16 unchanged).
constexpr int64_t kProjectionChunkBytes = int64_t(512) << 10;
constexpr int64_t kStreamingProjectionChunkBytes = int64_t(4) << 20;

int64_t projection_chunk_rows(int64_t input_size, int64_t hidden_size, int64_t element_size) {
  const int64_t bytes = cpu::streams_input_weights(input_size, hidden_size)
                            ? kStreamingProjectionChunkBytes
                            : kProjectionChunkBytes;
  return std::max<int64_t>(1, bytes / (4 * std::max<int64_t>(hidden_size, 1) * element_size));
}

const StepKernels kCpuStepKernels = {
    forward_step_cpu<float>,      forward_step_cpu<double>,
    forward_step_cpu<c10::Half>,  forward_step_cpu<c10::BFloat16>,
    backward_step_cpu<float>,     backward_step_cpu<double>,
    backward_step_cpu<c10::Half>, backward_step_cpu<c10::BFloat16>,
    kLayerForwardFloat,           kLayerBackwardFloat,           kGemmFloat,
    projection_chunk_rows,        kProjectsInputFirst,
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

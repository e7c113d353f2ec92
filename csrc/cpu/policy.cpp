#include "cpu/policy.h"

#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cstdlib>
#include <string_view>

#include "cpu/cache_sizes.h"
#include "cpu/gemm.h"
#include "cpu/isa.h"
#include "cpu/layer_kernels.h"
#include "cpu/microkernels.h"
#include "cpu/work_sharing.h"

namespace lstm_ext {
namespace cpu {
namespace {

constexpr int64_t kFloatBytes = sizeof(float);

int64_t threads_in_use() { return std::max<int64_t>(1, at::get_num_threads()); }

// Multiply-adds of the largest step's recurrent GEMM below which a layer runs on one thread:
// smaller steps do not repay the barriers between the threads.
constexpr int64_t kParallelStepGrain = 32768;

// Rows per brgemm call of the input projection: its best tile height, and a taller one where
// the W_ih panels stream from beyond L2 (each panel block is then read for more rows).
constexpr int64_t kProjectionRowTile = 64;
constexpr int64_t kStreamingProjectionRowTile = 256;

#if LSTM_EXT_HAS_CPU_LAYER_KERNELS
// MKL's sgemm (ATen's mm) for the backward's large GEMMs on Intel processors, where it runs
// them faster than parallel_gemm; parallel_gemm for smaller ones there and for all elsewhere
// (MKL does not pick its fastest kernels on other vendors' processors).
// LSTM_EXT_CPU_GEMM=lstm_ext or =aten overrides the choice (the tests run both).
constexpr int64_t kMinMklMultiplyAdds = int64_t(1) << 28;

bool mkl_is_the_faster_gemm() {
#if defined(__x86_64__) && defined(__GNUC__)
  static const bool intel = __builtin_cpu_is("intel");
  return intel;
#else
  return false;
#endif
}

GemmFloat cpu_gemm_float(int64_t multiply_adds) {
  const char* choice = std::getenv("LSTM_EXT_CPU_GEMM");
  if (choice == nullptr) {
    return mkl_is_the_faster_gemm() && multiply_adds >= kMinMklMultiplyAdds ? nullptr
                                                                            : parallel_gemm;
  }
  const std::string_view name(choice);
  TORCH_CHECK(name == "lstm_ext" || name == "aten",
              "LSTM_EXT_CPU_GEMM must be lstm_ext or aten, got ", name);
  return name == "lstm_ext" ? parallel_gemm : nullptr;
}

#endif

// Gates per input-projection chunk: each thread's columns of a chunk fill a quarter of its L2,
// leaving room for its weight panels; where the W_ih panels stream from beyond L2 anyway,
// chunks of twice the L2 per thread read them once per several steps instead of once per step.
int64_t projection_chunk_rows(int64_t input_size, int64_t hidden_size, int64_t element_size) {
  const int64_t l2 = cache_sizes().l2;
  const int64_t bytes_per_thread = streams_input_weights(input_size, hidden_size) ? 2 * l2 : l2 / 4;
  return std::max<int64_t>(1, bytes_per_thread * threads_in_use() /
                                  (4 * std::max<int64_t>(hidden_size, 1) * element_size));
}

#if LSTM_EXT_HAS_CPU_LAYER_KERNELS
// Steps of at most kMaxRowsProjectedFirst rows, with a W_ih that takes longer to transpose into
// the kernel's panels than ATen's GEMM (which reads it as stored) takes to run, have the driver
// project their input first: a W_ih of half an L2 or more, or any where the layer has fewer than
// kMinRowsToTranspose rows in all (a chunk of a stream). So do steps of at least
// kMinRowsProjectedFirstByMkl rows where MKL is the GEMM of that size and the W_ih panels stream,
// and every training on Intel (the gates of all rows are kept anyway, and MKL runs one GEMM over
// them at its full rate). Inference only up to kMaxUnsavedGatesProjectedFirst bytes of gates: an
// inference over long sequences should not need as much memory as a training step.
constexpr int64_t kMaxRowsProjectedFirst = 16;
constexpr int64_t kMinRowsToTranspose = 64;
constexpr int64_t kMinRowsProjectedFirstByMkl = 5;
constexpr int64_t kMaxUnsavedGatesProjectedFirst = int64_t(128) << 20;

bool projects_input_first(int64_t rows, int64_t max_step_rows, int64_t input_size,
                          int64_t hidden_size, bool save_for_backward) {
  const int64_t gates = rows * 4 * hidden_size;
  const bool mkl_is_the_gemm = cpu_gemm_float(gates * input_size) == nullptr;
  if (mkl_is_the_gemm && save_for_backward) return true;
  if (!save_for_backward && gates * kFloatBytes > kMaxUnsavedGatesProjectedFirst) return false;
  if (mkl_is_the_gemm && max_step_rows >= kMinRowsProjectedFirstByMkl &&
      streams_input_weights(input_size, hidden_size)) {
    return true;
  }
  return max_step_rows <= kMaxRowsProjectedFirst &&
         (rows < kMinRowsToTranspose ||
          4 * hidden_size * input_size * kFloatBytes >= cache_sizes().l2 / 2);
}

#endif

}  // namespace

int64_t layer_threads(int64_t max_rows, int64_t H, int64_t R) {
  const int64_t step_work = max_rows * 4 * H * R;
  const int64_t useful_threads = std::max<int64_t>(1, (H + kVectorColumns - 1) / kVectorColumns);
  return step_work < kParallelStepGrain ? 1 : std::min(threads_in_use(), useful_threads);
}

// Steps of at most this many rows read a recurrent weight as stored where its dot products are
// long: their one sum across a vector's lanes each is then a small part of their work.
constexpr int64_t kMaxRowsAlwaysAsStored = 2;

bool reads_as_stored(int64_t max_rows, int64_t num_steps, int64_t dot_length,
                     int64_t weight_bytes) {
  if (max_rows > kSmallRows) return false;
  const int64_t lanes = microkernels().vector_floats;
  // The transpose, once per call, costs about as much as a step's lane sums times the vectors
  // per dot product; beyond L2 both ways stream the weight once per step.
  if (num_steps < dot_length / lanes || weight_bytes > cache_sizes().l2) return true;
  return max_rows <= kMaxRowsAlwaysAsStored && dot_length >= 2 * lanes * lanes;
}

// Rows per thread at least for the batch split: with fewer, a thread's steps are too small for
// the GEMM kernels to run at speed.
constexpr int64_t kMinSplitRows = 8;

bool splits_batch(int64_t max_rows, int64_t threads, int64_t weight_bytes) {
  return threads > 1 && max_rows / threads >= kMinSplitRows && weight_bytes <= cache_sizes().l2;
}

int64_t recurrent_weight_bytes(int64_t H, int64_t R, const void* w_hr) {
  return (4 * H * R + (w_hr != nullptr ? R * H : 0)) * kFloatBytes;
}

// Steps of at most one band of rows (see RowBands) read each weight too few times to hide its
// load from beyond L2: much of their time goes into streaming the weights.
constexpr int64_t kMaxStreamingRows = kMinBandRows;

bool reverses_traversal(int64_t max_rows, int64_t weight_bytes, int64_t threads) {
  return max_rows <= kMaxStreamingRows && weight_bytes / threads > cache_sizes().l2 / 2;
}

bool streams_input_weights(int64_t input_size, int64_t hidden_size) {
  return input_size * 4 * hidden_size * kFloatBytes / threads_in_use() > cache_sizes().l2 / 2;
}

int64_t projection_row_tile(int64_t input_size, int64_t hidden_size) {
  return streams_input_weights(input_size, hidden_size) ? kStreamingProjectionRowTile
                                                        : kProjectionRowTile;
}

int64_t brgemm_block_floats() { return cache_sizes().l2 / 2 / kFloatBytes; }

#if LSTM_EXT_HAS_CPU_LAYER_KERNELS
const LayerPolicy kCpuLayerPolicy = {cpu_gemm_float, projection_chunk_rows, projects_input_first};
#else
// Without the layer kernels the driver runs ATen's GEMMs, its input projection in chunks.
const LayerPolicy kCpuLayerPolicy = {
    [](int64_t) -> GemmFloat { return nullptr; }, projection_chunk_rows,
    [](int64_t, int64_t, int64_t, int64_t, bool) { return false; }};
#endif

}  // namespace cpu
}  // namespace lstm_ext

// The float32 forward layer on the CPU in one parallel region.
//
// Each thread owns a block of hidden units for the whole layer: it projects the input into the
// four gate column blocks of its units (a chunk of steps at a time), adds h_{t-1} W_hh^T into
// them and applies the cell, all in its own columns, so those steps share nothing. A step's
// h_t is complete only when every thread has written its units, hence one barrier per step
// (two with the projection, whose output columns are split the same way). A barrier between two
// threads that stay in the region costs far less than starting a parallel region per step,
// which is what dominated small batches.
#include <ATen/Parallel.h>
#include <ATen/native/CPUBlas.h>

#include <algorithm>
#include <cstring>

#include "lstm_cpu.h"

#if defined(CPUBLAS_BRGEMM_F32F32F32) && defined(_OPENMP)
#include <omp.h>

namespace lstm_ext {
namespace cpu {
namespace {

// Multiply-adds of the largest step's recurrent GEMM below which the layer runs on one thread:
// smaller steps do not repay a barrier (measured: B=1, H=128, R=128 gains from two threads).
constexpr int64_t kParallelStepGrain = 32768;

// Thread blocks of hidden units and projection columns are multiples of one 64-byte line.
constexpr int64_t kVectorColumns = 16;

// Rows per brgemm call of the input projection (its measured best tile height).
constexpr int64_t kProjectionRowTile = 64;

struct ColumnRange {
  int64_t begin;
  int64_t end;
  int64_t size() const { return end - begin; }
};

// The block of [0, total) columns that thread `index` of `count` owns.
ColumnRange owned_columns(int64_t total, int64_t count, int64_t index) {
  const int64_t per_thread = (total + count - 1) / count;
  const int64_t block = (per_thread + kVectorColumns - 1) / kVectorColumns * kVectorColumns;
  const int64_t begin = std::min(total, index * block);
  return {begin, std::min(total, begin + block)};
}

// C (rows, cols; row stride ldc) = [C +] A (rows, K; stride lda) B (K, cols; stride ldb).
void gemm_block(int64_t rows, int64_t cols, int64_t K, int64_t lda, int64_t ldb, int64_t ldc,
                bool add_C, const float* A, const float* B, float* C) {
  if (rows == 0 || cols == 0) return;
  if (K == 0) {
    if (!add_C) {
      for (int64_t row = 0; row < rows; ++row) std::fill_n(C + row * ldc, cols, 0.0f);
    }
    return;
  }
  at::native::cpublas::brgemm(rows, cols, K, lda, ldb, ldc, add_C, A, B, C, /*is_vnni=*/false);
}

// The recurrent GEMM of a step of at most kSmallRows rows, for the hidden units
// [unit_begin, unit_end) of all four gates: gates[r, g*H + u] += sum_k h[r, k] W_hh^T[k, g*H + u].
// brgemm costs about a microsecond per call whatever its size, and a thread's units need one
// call per gate; this loop covers the four gates in one pass over W_hh^T, keeping up to 16
// vectors of sums in registers.
constexpr int64_t kSmallRows = 4;

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define LSTM_EXT_SMALL_GEMM_TARGETS \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define LSTM_EXT_SMALL_GEMM_TARGETS
#endif

// 16 floats; aligned(4) lets it load from and store to any float address.
typedef float FloatVector __attribute__((vector_size(64), aligned(4)));
constexpr int64_t kFloatVectorSize = 16;

// Rows x (4 gates x kVectors vectors) of sums over k, for the hidden units starting at `unit`.
template <int64_t kRows, int64_t kVectors>
inline __attribute__((always_inline)) void small_recurrent_tile(
    const float* hidden, int64_t K, const float* w_hh_t, int64_t H, float* gates, int64_t unit) {
  const int64_t G = 4 * H;
  FloatVector sums[kRows][4][kVectors];
  for (int64_t r = 0; r < kRows; ++r) {
    for (int64_t g = 0; g < 4; ++g) {
      for (int64_t v = 0; v < kVectors; ++v) {
        sums[r][g][v] = *reinterpret_cast<const FloatVector*>(
            gates + r * G + g * H + unit + v * kFloatVectorSize);
      }
    }
  }
  for (int64_t k = 0; k < K; ++k) {
    const float* w_row = w_hh_t + k * G + unit;
    for (int64_t g = 0; g < 4; ++g) {
      for (int64_t v = 0; v < kVectors; ++v) {
        const FloatVector w =
            *reinterpret_cast<const FloatVector*>(w_row + g * H + v * kFloatVectorSize);
        for (int64_t r = 0; r < kRows; ++r) sums[r][g][v] += hidden[r * K + k] * w;
      }
    }
  }
  for (int64_t r = 0; r < kRows; ++r) {
    for (int64_t g = 0; g < 4; ++g) {
      for (int64_t v = 0; v < kVectors; ++v) {
        *reinterpret_cast<FloatVector*>(gates + r * G + g * H + unit + v * kFloatVectorSize) =
            sums[r][g][v];
      }
    }
  }
}

// The units [unit, unit_end) in tiles of kVectors, then single vectors, then single columns.
template <int64_t kRows, int64_t kVectors>
inline __attribute__((always_inline)) void small_recurrent_rows(
    const float* hidden, int64_t K, const float* w_hh_t, int64_t H, float* gates,
    int64_t unit, int64_t unit_end) {
  const int64_t G = 4 * H;
  for (; unit + kVectors * kFloatVectorSize <= unit_end; unit += kVectors * kFloatVectorSize) {
    small_recurrent_tile<kRows, kVectors>(hidden, K, w_hh_t, H, gates, unit);
  }
  for (; unit + kFloatVectorSize <= unit_end; unit += kFloatVectorSize) {
    small_recurrent_tile<kRows, 1>(hidden, K, w_hh_t, H, gates, unit);
  }
  for (; unit < unit_end; ++unit) {
    for (int64_t r = 0; r < kRows; ++r) {
      for (int64_t g = 0; g < 4; ++g) {
        float sum = gates[r * G + g * H + unit];
        for (int64_t k = 0; k < K; ++k) sum += hidden[r * K + k] * w_hh_t[k * G + g * H + unit];
        gates[r * G + g * H + unit] = sum;
      }
    }
  }
}

// hidden (rows, K) contiguous; w_hh_t (K, 4H); gates (rows, 4H); rows <= kSmallRows.
LSTM_EXT_SMALL_GEMM_TARGETS void small_recurrent_gemm(int64_t rows, const float* hidden,
                                                      int64_t K, const float* w_hh_t, int64_t H,
                                                      float* gates, int64_t unit_begin,
                                                      int64_t unit_end) {
  switch (rows) {
    case 1: small_recurrent_rows<1, 4>(hidden, K, w_hh_t, H, gates, unit_begin, unit_end); break;
    case 2: small_recurrent_rows<2, 2>(hidden, K, w_hh_t, H, gates, unit_begin, unit_end); break;
    case 3: small_recurrent_rows<3, 1>(hidden, K, w_hh_t, H, gates, unit_begin, unit_end); break;
    case 4: small_recurrent_rows<4, 1>(hidden, K, w_hh_t, H, gates, unit_begin, unit_end); break;
    default: break;
  }
}

// gates (rows, 4H) += hidden (rows, R) W_hh^T for the units `units` of all four gates.
void add_recurrent(int64_t rows, const float* hidden, int64_t R, const float* w_hh_t, int64_t H,
                   float* gates, ColumnRange units) {
  if (rows == 0 || units.size() == 0) return;
  if (rows <= kSmallRows) {
    small_recurrent_gemm(rows, hidden, R, w_hh_t, H, gates, units.begin, units.end);
    return;
  }
  for (int64_t gate = 0; gate < 4; ++gate) {
    const int64_t column = gate * H + units.begin;
    gemm_block(rows, units.size(), R, R, 4 * H, 4 * H, /*add_C=*/true, hidden, w_hh_t + column,
               gates + column);
  }
}

typedef float Float8 __attribute__((vector_size(32), aligned(4)));
typedef int32_t Int8 __attribute__((vector_size(32)));

// dst (8 x 8; row stride ld_dst) = src (8 x 8; row stride ld_src) transposed, in registers.
inline __attribute__((always_inline)) void transpose_8x8(const float* src, int64_t ld_src,
                                                        float* dst, int64_t ld_dst) {
  Float8 rows[8];
  for (int64_t i = 0; i < 8; ++i) rows[i] = *reinterpret_cast<const Float8*>(src + i * ld_src);
  // Interleave pairs of rows, then pairs of pairs, then the 128-bit halves.
  Float8 pairs[8];
  for (int64_t i = 0; i < 8; i += 2) {
    pairs[i] = __builtin_shuffle(rows[i], rows[i + 1], Int8{0, 8, 1, 9, 4, 12, 5, 13});
    pairs[i + 1] = __builtin_shuffle(rows[i], rows[i + 1], Int8{2, 10, 3, 11, 6, 14, 7, 15});
  }
  Float8 quads[8];
  for (int64_t i = 0; i < 8; i += 4) {
    for (int64_t half = 0; half < 2; ++half) {
      quads[i + 2 * half] = __builtin_shuffle(pairs[i + half], pairs[i + half + 2],
                                              Int8{0, 1, 8, 9, 4, 5, 12, 13});
      quads[i + 2 * half + 1] = __builtin_shuffle(pairs[i + half], pairs[i + half + 2],
                                                  Int8{2, 3, 10, 11, 6, 7, 14, 15});
    }
  }
  // quads[j] holds columns j and j + 4 of rows 0-3 (quads[4 + j]: of rows 4-7), j < 4.
  for (int64_t j = 0; j < 4; ++j) {
    *reinterpret_cast<Float8*>(dst + j * ld_dst) =
        __builtin_shuffle(quads[j], quads[4 + j], Int8{0, 1, 2, 3, 8, 9, 10, 11});
    *reinterpret_cast<Float8*>(dst + (j + 4) * ld_dst) =
        __builtin_shuffle(quads[j], quads[4 + j], Int8{4, 5, 6, 7, 12, 13, 14, 15});
  }
}

// The columns [column_begin, column_end) of a transposed weight: w_t (K, ld_t) from the same
// rows of w (rows, K) contiguous; 8 x 8 blocks in registers, the edges one element at a time.
LSTM_EXT_SMALL_GEMM_TARGETS void transpose_rows(const float* w, int64_t K, int64_t column_begin,
                                                int64_t column_end, float* w_t, int64_t ld_t) {
  const int64_t K8 = K / 8 * 8;
  const int64_t row_end8 = column_begin + (column_end - column_begin) / 8 * 8;
  // Eight rows of w_t at a time, each written front to back (eight store streams).
  for (int64_t k = 0; k < K8; k += 8) {
    for (int64_t row = column_begin; row < row_end8; row += 8) {
      transpose_8x8(w + row * K + k, K, w_t + k * ld_t + row, ld_t);
    }
  }
  for (int64_t k = K8; k < K; ++k) {
    for (int64_t r = column_begin; r < row_end8; ++r) w_t[k * ld_t + r] = w[r * K + k];
  }
  const int64_t row = row_end8;
  for (int64_t k = 0; k < K; ++k) {
    for (int64_t r = row; r < column_end; ++r) w_t[k * ld_t + r] = w[r * K + k];
  }
}

// One thread's share of the layer: hidden units `units`, projection columns `projected`.
void run_owned_columns(const LayerForwardParams<float>& p, ColumnRange units,
                       ColumnRange projected) {
  const int64_t I = p.input_size;
  const int64_t H = p.hidden_size;
  const int64_t R = p.recurrent_size;
  const int64_t G = 4 * H;
  const bool has_projection = p.w_hr != nullptr;
  // The recurrent state's columns this thread writes into h_n: its hidden units, or with the
  // projection its projection columns.
  const ColumnRange state = has_projection ? projected : units;
  for (int64_t gate = 0; gate < 4; ++gate) {
    transpose_rows(p.w_ih, I, gate * H + units.begin, gate * H + units.end, p.w_ih_t, G);
    transpose_rows(p.w_hh, R, gate * H + units.begin, gate * H + units.end, p.w_hh_t, G);
  }
  if (has_projection) transpose_rows(p.w_hr, H, projected.begin, projected.end, p.w_hr_t, R);
  for (int64_t k = 0; k < p.num_steps; ++k) {
    const ForwardStepLayout& step = p.steps[k];
    if (step.project_rows > 0) {
      for (int64_t row = 0; row < step.project_rows; row += kProjectionRowTile) {
        const int64_t rows = std::min(kProjectionRowTile, step.project_rows - row);
        float* gate_tile = p.gates + (step.project_gate_row + row) * G;
        for (int64_t gate = 0; gate < 4; ++gate) {
          const int64_t column = gate * H + units.begin;
          for (int64_t r = 0; r < rows; ++r) {
            float* gate_row = gate_tile + r * G + column;
            if (p.bias != nullptr) {
              std::memcpy(gate_row, p.bias + column, units.size() * sizeof(float));
            } else {
              std::fill_n(gate_row, units.size(), 0.0f);
            }
          }
          gemm_block(rows, units.size(), I, I, G, G, /*add_C=*/true,
                     p.input + (step.project_row + row) * I, p.w_ih_t + column,
                     gate_tile + column);
        }
      }
    }
    if (step.rows == 0) continue;

    float* step_gates = p.gates + step.gate_row * G;
    const int64_t starting_rows = step.rows - step.carried_rows;
    add_recurrent(step.carried_rows, p.output + step.prev_row * R, R, p.w_hh_t, H, step_gates,
                  units);
    add_recurrent(starting_rows, p.h0 + step.carried_rows * R, R, p.w_hh_t, H,
                  step_gates + step.carried_rows * G, units);
    ForwardStepParams<float> cell;
    cell.gates = step_gates;
    cell.prev_cell = p.cells + step.prev_cell_row * H;
    cell.initial_cell = p.c0;
    cell.cell = p.cells + step.cell_row * H;
    cell.hidden = p.hidden + step.hidden_row * H;
    cell.rows = step.rows;
    cell.hidden_size = H;
    cell.hidden_stride = H;
    cell.carried_rows = step.carried_rows;
    if (units.size() > 0) forward_block_float(cell, 0, step.rows, units.begin, units.end);

    if (has_projection) {
      // The projection reads every hidden unit of the step.
#pragma omp barrier
      gemm_block(step.rows, projected.size(), H, H, R, R, /*add_C=*/false, cell.hidden,
                 p.w_hr_t + projected.begin, p.output + step.row * R + projected.begin);
    }
    for (int64_t row = step.finished_from; row < step.rows; ++row) {
      std::memcpy(p.h_n + row * R + state.begin, p.output + (step.row + row) * R + state.begin,
                  state.size() * sizeof(float));
      std::memcpy(p.c_n + row * H + units.begin, cell.cell + row * H + units.begin,
                  units.size() * sizeof(float));
    }
    // The next step's recurrent GEMM reads every column of this step's output.
#pragma omp barrier
  }
}

}  // namespace

void layer_forward_float(const LayerForwardParams<float>& p) {
  const int64_t H = p.hidden_size;
  int64_t max_rows = 0;
  for (int64_t k = 0; k < p.num_steps; ++k) max_rows = std::max(max_rows, p.steps[k].rows);
  const int64_t step_work = max_rows * 4 * H * p.recurrent_size;
  // At least one vector block of hidden units per thread.
  const int64_t useful_threads = std::max<int64_t>(1, (H + kVectorColumns - 1) / kVectorColumns);
  const int64_t threads = step_work < kParallelStepGrain
                              ? 1
                              : std::min<int64_t>(at::get_num_threads(), useful_threads);
  // The team may be smaller than asked (inside another parallel region it is one thread): the
  // columns are split over the threads that actually run.
#pragma omp parallel num_threads(static_cast<int>(threads))
  {
    const int64_t count = omp_get_num_threads();
    const int64_t index = omp_get_thread_num();
    const int64_t P = p.w_hr != nullptr ? p.recurrent_size : 0;
    run_owned_columns(p, owned_columns(H, count, index), owned_columns(P, count, index));
    at::native::cpublas::brgemm_release(/*is_vnni=*/false);
  }
}

}  // namespace cpu
}  // namespace lstm_ext

#endif

// Weight panels of the CPU layer kernels: the columns of a weight that a work item multiplies
// by, copied into the layout its GEMMs stream best, and the GEMMs of a step over them.
#pragma once

#include <c10/util/BFloat16.h>

#include <algorithm>
#include <cstdint>

#include "cpu/work_sharing.h"

namespace lstm_ext {
namespace cpu {

// A (K, n) weight panel, stored as column blocks of gemm_block_columns(K): block after block,
// each (K, block columns) contiguous. A GEMM call then reads its block of B as one sequential
// stream, which the prefetchers follow; rows of a wider panel (or of a full weight) lie
// kilobytes apart, and a block streamed from L3 that way leaves the GEMM kernel waiting.
struct BlockedPanel {
  float* data;
  int64_t K;
  int64_t n;
  int64_t block_columns;
  const float* block(int64_t col) const { return data + col * K; }  // from column `col`
  int64_t block_size(int64_t col) const { return std::min(block_columns, n - col); }
};

BlockedPanel blocked_panel(float* data, int64_t K, int64_t n);

// The panel of the columns `columns` in a scratch of such panels in column order.
BlockedPanel column_panel(float* scratch, int64_t K, IndexRange columns);

// The gate panels of the hidden units `units` of a gate weight (4H, K): four transposed
// (K, units) panels one after the other, in a (K, 4H) scratch of such panels in unit order
// (those of `units` start at K * 4 * units.begin).
BlockedPanel gate_panels(float* scratch, int64_t K, IndexRange units);

// panel = rows (n, K; row stride K) transposed.
void pack_transposed(const float* rows, BlockedPanel panel);

// panel = the columns [begin, begin + n) of W (K, ldw).
void pack_columns(const float* w, int64_t ldw, int64_t begin, BlockedPanel panel);

// The gate panels of `units` from w (4H, K).
void pack_gate_panels(const float* w, int64_t H, IndexRange units, BlockedPanel panels);

// gates (rows, 4H) [+]= A (rows, K) W^T for the units `units` of all four gates (w: their four
// gate panels); `reversed` reads the gates' panels from the last (see Team::reverses).
void add_to_gates(int64_t rows, const float* A, int64_t lda, const BlockedPanel& w, int64_t H,
                  float* gates, IndexRange units, bool add_C, bool reversed);

// gates (rows, 4H) += A (rows, K; row stride K) W^T for the units `units` of all four gates,
// rows <= kSmallRows, with W (4H, K) as stored (float or bfloat16).
void add_to_gates_as_stored(int64_t rows, const float* A, int64_t K, const float* w, int64_t H,
                            float* gates, IndexRange units, bool reversed);
void add_to_gates_as_stored(int64_t rows, const float* A, int64_t K, const c10::BFloat16* w,
                            int64_t H, float* gates, IndexRange units, bool reversed);

// C (rows, n) = A (rows, K) W^T for rows <= kSmallRows, with W (n, K; row stride K) as stored.
void multiply_as_stored(int64_t rows, const float* A, int64_t lda, const float* w, int64_t K,
                        int64_t n, float* C, int64_t ldc);

// C (rows, w.n) = A (rows, w.K) w.
void multiply_columns(int64_t rows, const float* A, int64_t lda, const BlockedPanel& w, float* C,
                      int64_t ldc);

}  // namespace cpu
}  // namespace lstm_ext

// The CPU's float32 GEMMs built on oneDNN's batch-reduce GEMM kernel (brgemm, through ATen):
// blocks of many rows for the layer kernels, and the two-thread GEMM behind the backward's
// gradients after its step loop. Matrices are row-major with the given row strides (ld*).
#pragma once

#include <cstdint>

#include "core/lstm_layer.h"

namespace lstm_ext {
namespace cpu {

// C (rows, cols) = [C +] A (rows, K) B (K, cols) through brgemm, in calls small enough for B's
// block to stay in L2; any size, zero included.
void gemm_block(int64_t rows, int64_t cols, int64_t K, int64_t lda, int64_t ldb, int64_t ldc,
                bool add_C, const float* A, const float* B, float* C);

// The columns of B per gemm_block call for depth K: a block of B (K, columns) stays in L2.
int64_t gemm_block_columns(int64_t K);

// lstm_layer.h's GemmParams (C = A B, or C = A^T B with its second product and column sums)
// over all threads: the backward's input, weight and bias gradients.
void parallel_gemm(const GemmParams& params);

}  // namespace cpu
}  // namespace lstm_ext

// The CPU's float32 GEMMs: the building blocks of the layer kernels (lstm_cpu_layer.cpp), oneDNN's
// brgemm for blocks of many rows, register-tiled loops for steps of a few rows and weight
// transposes; and the two-thread GEMM behind the backward's gradients after its step loop (the
// `gemm_float` hook, lstm_cpu.cpp). Matrices are row-major with the given row strides (ld*).
#pragma once

#include <cstdint>

#include "lstm_layer.h"

namespace lstm_ext {
namespace cpu {

// Steps of at most this many rows run `small_gemm` instead of brgemm, which costs about a
// microsecond per call whatever its size.
constexpr int64_t kSmallRows = 4;

// C (rows, cols) = [C +] A (rows, K) B (K, cols) through oneDNN's batch-reduce GEMM kernel, in
// calls small enough for B's block to stay in L2; any size, zero included.
void gemm_block(int64_t rows, int64_t cols, int64_t K, int64_t lda, int64_t ldb, int64_t ldc,
                bool add_C, const float* A, const float* B, float* C);

// The columns of B per gemm_block call for depth K: a block of B (K, columns) stays in L2.
int64_t gemm_block_columns(int64_t K);

// For rows <= kSmallRows, over `blocks` (1 or 4) column blocks and the columns
// [col_begin, col_end) of each:
//   C[r, b * c_block_stride + c] = [C[r, ...] +] sum_k A[r, k] B[k, c] of block b,
// block b of B starting b_block_stride floats after B. With the four gate panels of a thread's
// W_hh^T, one pass serves its hidden units of all four gates, with up to 16 vectors of sums in
// registers.
void small_gemm(int64_t rows, int64_t blocks, int64_t b_block_stride, int64_t c_block_stride,
                int64_t col_begin, int64_t col_end, int64_t K, const float* A, int64_t lda,
                const float* B, int64_t ldb, float* C, int64_t ldc, bool add_C);

// For rows <= kSmallRows: C (rows, n) = [C +] A (rows, K) W^T, with W (n, K) as stored (row
// stride ldw). Each output is a dot product of a row of A and one of W, read front to back:
// no transposed copy of W is needed, which costs more than the GEMM when few rows read W.
void small_gemm_transposed_b(int64_t rows, int64_t n, int64_t K, const float* A, int64_t lda,
                             const float* W, int64_t ldw, float* C, int64_t ldc, bool add_C);

// The same with W in bfloat16 (read as its exact float values: the results equal those with W
// widened to float), half the bytes to stream where few rows read W.
void small_gemm_transposed_b(int64_t rows, int64_t n, int64_t K, const float* A, int64_t lda,
                             const c10::BFloat16* W, int64_t ldw, float* C, int64_t ldc,
                             bool add_C);

// dst (cols, ld_dst) = src (rows, ld_src) transposed.
void transpose(const float* src, int64_t ld_src, int64_t rows, int64_t cols, float* dst,
               int64_t ld_dst);

// lstm_layer.h's GemmParams (C = A B, or C = A^T B with its second product and column sums)
// over all threads: the backward's input, weight and bias gradients.
void parallel_gemm(const GemmParams& params);

}  // namespace cpu
}  // namespace lstm_ext

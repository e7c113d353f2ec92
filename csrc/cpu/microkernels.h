// The CPU's microkernels: the inner loops whose speed depends on the instruction set, compiled
// once per ISA level (microkernels_<level>.cpp, from microkernel_templates.h) and chosen at run
// time (isa.h). Matrices are row-major with the given row strides (ld*).
#pragma once

#include <c10/util/BFloat16.h>

#include <cstdint>

#include "core/lstm_math.h"

namespace lstm_ext {
namespace cpu {

// For rows <= kSmallRows, over `blocks` (1 or 4) column blocks and the columns
// [col_begin, col_end) of each:
//   C[r, b * c_block_stride + c] = [C[r, ...] +] sum_k A[r, k] B[k, c] of block b,
// block b of B starting b_block_stride floats after B. With the four gate panels of a thread's
// W_hh^T, one pass over A serves its hidden units of all four gates.
struct SmallGemmParams {
  int64_t rows;
  int64_t blocks;
  int64_t b_block_stride, c_block_stride;
  int64_t col_begin, col_end;
  int64_t K;
  const float* A;  // (rows, K)
  int64_t lda;
  const float* B;  // (K, >= col_end) per block
  int64_t ldb;
  float* C;        // (rows, >= col_end) per block
  int64_t ldc;
  bool add_C;
};

// For rows <= kSmallRows: C (rows, n) = [C +] A (rows, K) W^T, with W (n, K) as stored, its
// elements float or bfloat16 (read as their exact float values). Each output is a dot product
// of a row of A and one of W, read front to back: no transposed copy of W is needed, which
// costs more than the GEMM when few rows read W.
template <typename weight_t>
struct DotGemmParams {
  int64_t rows;
  int64_t n;
  int64_t K;
  const float* A;     // (rows, K)
  int64_t lda;
  const weight_t* W;  // (n, K)
  int64_t ldw;
  float* C;           // (rows, n)
  int64_t ldc;
  bool add_C;
};

// Steps of at most this many rows run the register-tiled small_gemm and dot_gemm instead of
// oneDNN's brgemm, which costs about a microsecond per call whatever its size.
constexpr int64_t kSmallRows = 4;

// One ISA level's microkernels.
struct Microkernels {
  const char* isa;        // the level's LSTM_EXT_CPU_ISA name
  int64_t vector_floats;  // floats per vector register
  // The forward and backward cells over rows [row_begin, row_end) x hidden columns
  // [col_begin, col_end) of a float32 step (lstm_math.h's element functions).
  void (*forward_cell)(const ForwardStepParams<float>& params, int64_t row_begin, int64_t row_end,
                       int64_t col_begin, int64_t col_end);
  void (*backward_cell)(const BackwardStepParams<float>& params, int64_t row_begin, int64_t row_end,
                        int64_t col_begin, int64_t col_end);
  void (*small_gemm)(const SmallGemmParams& params);
  void (*dot_gemm_float)(const DotGemmParams<float>& params);
  void (*dot_gemm_bfloat16)(const DotGemmParams<c10::BFloat16>& params);
  // dst (cols, ld_dst) = src (rows, ld_src) transposed.
  void (*transpose)(const float* src, int64_t ld_src, int64_t rows, int64_t cols, float* dst,
                    int64_t ld_dst);
};

// Each level's microkernels, or nullptr where this build has none for it (another
// architecture). The baseline is x86-64's SSE2, or ARM64's NEON.
const Microkernels* baseline_microkernels();
const Microkernels* avx2_microkernels();
const Microkernels* avx512_microkernels();

}  // namespace cpu
}  // namespace lstm_ext

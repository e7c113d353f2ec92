#include "cpu/gemm.h"

#include <ATen/Parallel.h>
#include <ATen/native/CPUBlas.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "cpu/isa.h"
#include "cpu/policy.h"

// Built with the layer kernels that use it (see layer_kernels.h).
#if defined(CPUBLAS_BRGEMM_F32F32F32) && defined(_OPENMP)
#include <omp.h>

namespace lstm_ext {
namespace cpu {
namespace {

// oneDNN's brgemm kernel runs the whole depth K for each tile of C, so B (K, cols) is read
// once per tile row of A: deeper than about 1024, or over brgemm_block_floats() (half of a
// core's L2), that stream comes from L3 every time. parallel_gemm and gemm_block split K and the
// columns to keep B's block in L2.
constexpr int64_t kMaxBrgemmDepth = 1024;

// A step's GEMMs (gemm_block) stream a weight panel that the next tile of rows reads again:
// chunks of K this deep keep those rows of the panel in the core's caches until it does.
constexpr int64_t kMaxStepBrgemmDepth = 256;

// Rows of A per brgemm call in parallel_gemm: the tile height at which brgemm runs fastest.
constexpr int64_t kGemmRowTile = 64;

// Columns per thread of a column-split GEMM are whole 64-byte lines of C.
constexpr int64_t kLineFloats = 16;

// The block of C's rows and (all parts') columns a thread computes.
struct CBlock {
  int64_t row_begin, row_end, col_begin, col_end;
};

// Thread `index` of `count`'s block of C (M, columns): its rows (whole row tiles) or its
// columns (whole vectors).
CBlock thread_block(int64_t M, int64_t columns, bool split_rows, int64_t count, int64_t index) {
  const int64_t unit = split_rows ? kGemmRowTile : kLineFloats;
  const int64_t length = split_rows ? M : columns;
  const int64_t per_thread = ((length + count - 1) / count + unit - 1) / unit * unit;
  const int64_t begin = std::min(length, index * per_thread);
  const int64_t end = std::min(length, begin + per_thread);
  return split_rows ? CBlock{begin, end, 0, columns} : CBlock{0, M, begin, end};
}

// K in equal chunks of at most `max_depth`; B's blocks of that depth at most
// brgemm_block_floats().
struct Blocking {
  int64_t depth, columns;
};

Blocking gemm_blocking(int64_t K, int64_t max_depth) {
  const int64_t chunks = std::max<int64_t>(1, (K + max_depth - 1) / max_depth);
  const int64_t depth = std::max<int64_t>(1, (K + chunks - 1) / chunks);
  return {depth, std::max(kLineFloats, brgemm_block_floats() / depth / kLineFloats * kLineFloats)};
}

void zero_rows(float* C, int64_t ldc, int64_t row_begin, int64_t row_end, int64_t col_begin,
               int64_t col_end) {
  for (int64_t row = row_begin; row < row_end; ++row) {
    std::fill(C + row * ldc + col_begin, C + row * ldc + col_end, 0.0f);
  }
}

// C = A B over a thread's block: per chunk of K and block of its columns, that block of B is
// packed (it then stays in L2) and brgemm runs over the thread's row tiles of A against it.
void thread_gemm(const GemmParams& p, const CBlock& block) {
  if (p.K == 0) {
    zero_rows(p.C, p.ldc, block.row_begin, block.row_end, block.col_begin, block.col_end);
  }
  const Blocking blocking = gemm_blocking(p.K, kMaxBrgemmDepth);
  static thread_local std::vector<float> packed_b;
  packed_b.resize(blocking.depth * blocking.columns);
  for (int64_t k = 0; k < p.K; k += blocking.depth) {
    const int64_t depth = std::min(blocking.depth, p.K - k);
    for (int64_t col = block.col_begin; col < block.col_end; col += blocking.columns) {
      const int64_t cols = std::min(blocking.columns, block.col_end - col);
      for (int64_t row = 0; row < depth; ++row) {
        std::memcpy(packed_b.data() + row * cols, p.B + (k + row) * p.ldb + col,
                    cols * sizeof(float));
      }
      for (int64_t row = block.row_begin; row < block.row_end; row += kGemmRowTile) {
        at::native::cpublas::brgemm(std::min(kGemmRowTile, block.row_end - row), cols, depth, p.lda,
                                    cols, p.ldc, /*add_C=*/k > 0, p.A + row * p.lda + k,
                                    packed_b.data(), p.C + row * p.ldc + col, /*is_vnni=*/false);
      }
    }
  }
}

// One part of a transposed GEMM: C (M, N) = A^T B with B (K, N), as the columns
// [offset, offset + N) of all parts.
struct ProductPart {
  const float* B;
  int64_t ldb;
  float* C;
  int64_t ldc;
  int64_t offset, N;
};

// C = A^T B and C2 = A^T B2 over a thread's block, with A's column sums: per chunk of K, the
// thread packs its columns of B and B2 into panels of blocking.columns; per row tile it packs
// that tile of A^T (a transpose of A's rows, which gives the sums too) and runs brgemm against
// each panel. A^T is packed once for both products.
void thread_transposed_gemm(const GemmParams& p, const CBlock& block) {
  const ProductPart parts[2] = {{p.B, p.ldb, p.C, p.ldc, 0, p.N},
                                {p.B2, p.ldb2, p.C2, p.ldc2, p.N, p.N2}};
  const bool sums = p.a_column_sums != nullptr && block.col_begin == 0;
  if (p.K == 0) {
    for (const ProductPart& part : parts) {
      const int64_t begin = std::max(block.col_begin, part.offset) - part.offset;
      const int64_t end = std::min(block.col_end, part.offset + part.N) - part.offset;
      if (end > begin) zero_rows(part.C, part.ldc, block.row_begin, block.row_end, begin, end);
    }
    if (sums) std::fill(p.a_column_sums + block.row_begin, p.a_column_sums + block.row_end, 0.0f);
  }
  const Blocking blocking = gemm_blocking(p.K, kMaxBrgemmDepth);
  static thread_local std::vector<float> packed_b, packed_a;
  packed_b.resize(blocking.depth * (block.col_end - block.col_begin));
  packed_a.resize(blocking.depth * kGemmRowTile);
  for (int64_t k = 0; k < p.K; k += blocking.depth) {
    const int64_t depth = std::min(blocking.depth, p.K - k);
    // The thread's columns of this chunk of B, panel after panel (each depth x cols).
    for (const ProductPart& part : parts) {
      const int64_t begin = std::max(block.col_begin, part.offset);
      const int64_t end = std::min(block.col_end, part.offset + part.N);
      for (int64_t col = begin; col < end; col += blocking.columns) {
        const int64_t cols = std::min(blocking.columns, end - col);
        float* panel = packed_b.data() + (col - block.col_begin) * depth;
        for (int64_t row = 0; row < depth; ++row) {
          std::memcpy(panel + row * cols, part.B + (k + row) * part.ldb + col - part.offset,
                      cols * sizeof(float));
        }
      }
    }
    for (int64_t row = block.row_begin; row < block.row_end; row += kGemmRowTile) {
      const int64_t rows = std::min(kGemmRowTile, block.row_end - row);
      microkernels().transpose(p.A + k * p.lda + row, p.lda, depth, rows, packed_a.data(), depth);
      if (sums) {
        for (int64_t r = 0; r < rows; ++r) {
          const float* a_row = packed_a.data() + r * depth;
          float sum = k > 0 ? p.a_column_sums[row + r] : 0.0f;
#pragma omp simd reduction(+ : sum)
          for (int64_t kk = 0; kk < depth; ++kk) sum += a_row[kk];
          p.a_column_sums[row + r] = sum;
        }
      }
      for (const ProductPart& part : parts) {
        const int64_t begin = std::max(block.col_begin, part.offset);
        const int64_t end = std::min(block.col_end, part.offset + part.N);
        for (int64_t col = begin; col < end; col += blocking.columns) {
          const int64_t cols = std::min(blocking.columns, end - col);
          at::native::cpublas::brgemm(
              rows, cols, depth, depth, cols, part.ldc, /*add_C=*/k > 0, packed_a.data(),
              packed_b.data() + (col - block.col_begin) * depth,
              part.C + row * part.ldc + col - part.offset, /*is_vnni=*/false);
        }
      }
    }
  }
}

}  // namespace

void gemm_block(int64_t rows, int64_t cols, int64_t K, int64_t lda, int64_t ldb, int64_t ldc,
                bool add_C, const float* A, const float* B, float* C) {
  if (rows == 0 || cols == 0) return;
  if (K == 0) {
    if (!add_C) {
      for (int64_t row = 0; row < rows; ++row) std::fill_n(C + row * ldc, cols, 0.0f);
    }
    return;
  }
  const Blocking blocking = gemm_blocking(K, kMaxStepBrgemmDepth);
  for (int64_t col = 0; col < cols; col += blocking.columns) {
    const int64_t block_cols = std::min(blocking.columns, cols - col);
    for (int64_t k = 0; k < K; k += blocking.depth) {
      at::native::cpublas::brgemm(rows, block_cols, std::min(blocking.depth, K - k), lda, ldb, ldc,
                                  add_C || k > 0, A + k, B + k * ldb + col, C + col,
                                  /*is_vnni=*/false);
    }
  }
}

int64_t gemm_block_columns(int64_t K) { return gemm_blocking(K, kMaxStepBrgemmDepth).columns; }

void parallel_gemm(const GemmParams& params) {
  microkernels();  // chosen here, where an error can still reach the caller
  const int64_t columns = params.N + params.N2;
  if (params.M == 0 || columns == 0) return;
  const bool split_rows = params.M >= columns;
  const int64_t threads = std::min<int64_t>(
      at::get_num_threads(), split_rows ? (params.M + kGemmRowTile - 1) / kGemmRowTile
                                        : (columns + kLineFloats - 1) / kLineFloats);
#pragma omp parallel num_threads(static_cast<int>(threads))
  {
    const GemmParams p = params;  // a copy on this thread's stack (see forward_thread)
    const CBlock block =
        thread_block(p.M, columns, split_rows, omp_get_num_threads(), omp_get_thread_num());
    if (p.transpose_a) {
      thread_transposed_gemm(p, block);
    } else {
      thread_gemm(p, block);
    }
    at::native::cpublas::brgemm_release(/*is_vnni=*/false);
  }
}

}  // namespace cpu
}  // namespace lstm_ext

#endif

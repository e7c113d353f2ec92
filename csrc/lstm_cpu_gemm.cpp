#include "lstm_cpu_gemm.h"

#include <ATen/Parallel.h>
#include <ATen/native/CPUBlas.h>

#include <algorithm>
#include <cstring>
#include <vector>

// Built with the layer kernels that use it (see lstm_cpu_layer.cpp).
#if defined(CPUBLAS_BRGEMM_F32F32F32) && defined(_OPENMP)
#include <omp.h>

namespace lstm_ext {
namespace cpu {
namespace {

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define LSTM_EXT_GEMM_TARGETS \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define LSTM_EXT_GEMM_TARGETS
#endif
#define LSTM_EXT_INLINE inline __attribute__((always_inline))

// oneDNN's brgemm kernel runs the whole depth K for each tile of C, so B (K, cols) is read
// once per tile row of A: deeper than about 1024, or over about half of a core's L2, that
// stream comes from L3 every time. gemm_block splits K and the columns to keep B's block in L2
// (measured: the backward step GEMM of H=1024, 64 x 4096 @ 4096 x 512 per thread, at 1.75x
// the rate of one call; the forward's 1024-deep gate panels 5% faster).
constexpr int64_t kMaxBrgemmDepth = 1024;
constexpr int64_t kMaxBrgemmBlock = 128 * 1024;  // floats of B per call

// Rows of A per brgemm call in parallel_gemm (its measured best, with 32 a close second). With
// the blocking above, parallel_gemm ran the backward's large GEMMs (6400 x 4096 @ 4096 x 512 and
// the like) at 205-215 GFLOP/s on two cores, where MKL's sgemm (at::mm) ran at 180-185 and
// oneDNN's matmul at 215.
constexpr int64_t kGemmRowTile = 64;

// 16 floats; aligned(4) lets it load from and store to any float address.
typedef float FloatVector __attribute__((vector_size(64), aligned(4)));
constexpr int64_t kFloatVectorSize = 16;

// A GEMM over column blocks of B and C (see small_gemm in the header).
struct SmallGemm : GemmParams {
  int64_t b_block_stride, c_block_stride;
  bool add_C;
};

// kRows x (kBlocks x kVectors vectors) of C, from column `col` of each block.
template <int64_t kRows, int64_t kBlocks, int64_t kVectors>
LSTM_EXT_INLINE void small_gemm_tile(const SmallGemm& g, int64_t col) {
  FloatVector sums[kRows][kBlocks][kVectors];
  for (int64_t r = 0; r < kRows; ++r) {
    for (int64_t b = 0; b < kBlocks; ++b) {
      for (int64_t v = 0; v < kVectors; ++v) {
        sums[r][b][v] = g.add_C ? *reinterpret_cast<const FloatVector*>(
                                      g.C + r * g.ldc + b * g.c_block_stride + col +
                                      v * kFloatVectorSize)
                                : FloatVector{};
      }
    }
  }
  for (int64_t k = 0; k < g.K; ++k) {
    const float* b_row = g.B + k * g.ldb + col;
    for (int64_t b = 0; b < kBlocks; ++b) {
      for (int64_t v = 0; v < kVectors; ++v) {
        const FloatVector w = *reinterpret_cast<const FloatVector*>(b_row + b * g.b_block_stride +
                                                                    v * kFloatVectorSize);
        for (int64_t r = 0; r < kRows; ++r) sums[r][b][v] += g.A[r * g.lda + k] * w;
      }
    }
  }
  for (int64_t r = 0; r < kRows; ++r) {
    for (int64_t b = 0; b < kBlocks; ++b) {
      for (int64_t v = 0; v < kVectors; ++v) {
        *reinterpret_cast<FloatVector*>(g.C + r * g.ldc + b * g.c_block_stride + col +
                                        v * kFloatVectorSize) = sums[r][b][v];
      }
    }
  }
}

// Columns [col, col_end) in tiles of kVectors vectors, then of half as many (down to one
// vector: narrower tiles keep fewer sums in flight but still beat a loop per vector), then one
// column at a time.
template <int64_t kRows, int64_t kBlocks, int64_t kVectors>
LSTM_EXT_INLINE void small_gemm_rows(const SmallGemm& g, int64_t col, int64_t col_end) {
  for (; col + kVectors * kFloatVectorSize <= col_end; col += kVectors * kFloatVectorSize) {
    small_gemm_tile<kRows, kBlocks, kVectors>(g, col);
  }
  if constexpr (kVectors > 1) {
    small_gemm_rows<kRows, kBlocks, kVectors / 2>(g, col, col_end);
  } else {
    for (; col < col_end; ++col) {
      for (int64_t r = 0; r < kRows; ++r) {
        for (int64_t b = 0; b < kBlocks; ++b) {
          float* c = g.C + r * g.ldc + b * g.c_block_stride + col;
          float sum = g.add_C ? *c : 0.0f;
          for (int64_t k = 0; k < g.K; ++k) {
            sum += g.A[r * g.lda + k] * g.B[k * g.ldb + b * g.b_block_stride + col];
          }
          *c = sum;
        }
      }
    }
  }
}

// Tile widths keep 8-16 independent vectors of sums per row count (enough to hide the FMA
// latency, few enough for the 32 vector registers).
LSTM_EXT_GEMM_TARGETS void small_gemm_four_blocks(int64_t rows, const SmallGemm& g, int64_t col,
                                                  int64_t col_end) {
  switch (rows) {
    case 1: small_gemm_rows<1, 4, 4>(g, col, col_end); break;
    case 2: small_gemm_rows<2, 4, 2>(g, col, col_end); break;
    case 3: small_gemm_rows<3, 4, 1>(g, col, col_end); break;
    case 4: small_gemm_rows<4, 4, 1>(g, col, col_end); break;
    default: break;
  }
}

LSTM_EXT_GEMM_TARGETS void small_gemm_one_block(int64_t rows, const SmallGemm& g, int64_t col,
                                                int64_t col_end) {
  switch (rows) {
    case 1: small_gemm_rows<1, 1, 8>(g, col, col_end); break;
    case 2: small_gemm_rows<2, 1, 4>(g, col, col_end); break;
    case 3: small_gemm_rows<3, 1, 4>(g, col, col_end); break;
    case 4: small_gemm_rows<4, 1, 2>(g, col, col_end); break;
    default: break;
  }
}

typedef float Float8 __attribute__((vector_size(32), aligned(4)));
typedef int32_t Int8 __attribute__((vector_size(32)));

typedef float Float4 __attribute__((vector_size(16), aligned(4)));

LSTM_EXT_INLINE float horizontal_sum(const FloatVector& v) {
  Float8 halves[2];
  std::memcpy(halves, &v, sizeof(v));
  const Float8 eight = halves[0] + halves[1];
  Float4 quarters[2];
  std::memcpy(quarters, &eight, sizeof(eight));
  const Float4 four = quarters[0] + quarters[1];
  return (four[0] + four[2]) + (four[1] + four[3]);
}

// C (rows, n) = [C +] A (rows, K) W^T, W (n, K) as stored (see small_gemm_transposed_b), its
// elements float or bfloat16.
template <typename weight_t>
struct DotGemm {
  int64_t K;
  const float* A;
  int64_t lda;
  const weight_t* W;
  int64_t ldw;
  float* C;
  int64_t ldc;
  bool add_C;
};

LSTM_EXT_INLINE FloatVector load_weights(const float* w) {
  return *reinterpret_cast<const FloatVector*>(w);
}

typedef uint16_t Uint16Vector __attribute__((vector_size(32), aligned(2)));
typedef int32_t Int32Vector __attribute__((vector_size(64)));

// 16 bfloat16 as floats: a bfloat16 is the high half of a float's bits (exact).
LSTM_EXT_INLINE FloatVector load_weights(const c10::BFloat16* w) {
  Uint16Vector bits;
  std::memcpy(&bits, w, sizeof(bits));
  const Int32Vector float_bits = __builtin_convertvector(bits, Int32Vector) << 16;
  FloatVector values;
  std::memcpy(&values, &float_bits, sizeof(values));
  return values;
}

// kRows x kOutputs dot products from output `output`: vectors of partial sums along K, each
// summed across its lanes at the end.
template <int64_t kRows, int64_t kOutputs, typename weight_t>
LSTM_EXT_INLINE void dot_tile(const DotGemm<weight_t>& g, int64_t output) {
  FloatVector sums[kRows][kOutputs];
  for (int64_t r = 0; r < kRows; ++r) {
    for (int64_t o = 0; o < kOutputs; ++o) sums[r][o] = FloatVector{};
  }
  const int64_t vector_end = g.K / kFloatVectorSize * kFloatVectorSize;
  for (int64_t k = 0; k < vector_end; k += kFloatVectorSize) {
    FloatVector a[kRows];
    for (int64_t r = 0; r < kRows; ++r) {
      a[r] = *reinterpret_cast<const FloatVector*>(g.A + r * g.lda + k);
    }
    for (int64_t o = 0; o < kOutputs; ++o) {
      const FloatVector w = load_weights(g.W + (output + o) * g.ldw + k);
      for (int64_t r = 0; r < kRows; ++r) sums[r][o] += a[r] * w;
    }
  }
  for (int64_t r = 0; r < kRows; ++r) {
    for (int64_t o = 0; o < kOutputs; ++o) {
      float sum = horizontal_sum(sums[r][o]);
      for (int64_t k = vector_end; k < g.K; ++k) {
        sum += g.A[r * g.lda + k] * static_cast<float>(g.W[(output + o) * g.ldw + k]);
      }
      float* c = g.C + r * g.ldc + output + o;
      *c = g.add_C ? *c + sum : sum;
    }
  }
}

template <int64_t kRows, int64_t kOutputs, typename weight_t>
LSTM_EXT_INLINE void dot_rows(const DotGemm<weight_t>& g, int64_t n) {
  int64_t output = 0;
  for (; output + kOutputs <= n; output += kOutputs) dot_tile<kRows, kOutputs>(g, output);
  for (; output < n; ++output) dot_tile<kRows, 1>(g, output);
}

// 8-16 vectors of sums per row count, as in small_gemm.
template <typename weight_t>
LSTM_EXT_INLINE void dot_gemm_rows(int64_t rows, int64_t n, const DotGemm<weight_t>& g) {
  switch (rows) {
    case 1: dot_rows<1, 8>(g, n); break;
    case 2: dot_rows<2, 4>(g, n); break;
    case 3: dot_rows<3, 4>(g, n); break;
    case 4: dot_rows<4, 4>(g, n); break;
    default: break;
  }
}

LSTM_EXT_GEMM_TARGETS void dot_gemm(int64_t rows, int64_t n, const DotGemm<float>& g) {
  dot_gemm_rows(rows, n, g);
}

LSTM_EXT_GEMM_TARGETS void dot_gemm(int64_t rows, int64_t n, const DotGemm<c10::BFloat16>& g) {
  dot_gemm_rows(rows, n, g);
}

// dst (8 x 8; row stride ld_dst) = src (8 x 8; row stride ld_src) transposed, in registers.
LSTM_EXT_INLINE void transpose_8x8(const float* src, int64_t ld_src,
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

// dst (cols, ld_dst) = src (rows, ld_src) transposed; 8 x 8 blocks in registers, the edges one
// element at a time.
LSTM_EXT_GEMM_TARGETS void transpose_impl(const float* src, int64_t ld_src, int64_t rows,
                                          int64_t cols, float* dst, int64_t ld_dst) {
  const int64_t cols8 = cols / 8 * 8;
  const int64_t rows8 = rows / 8 * 8;
  // Eight rows of dst at a time, each written front to back (eight store streams).
  for (int64_t col = 0; col < cols8; col += 8) {
    for (int64_t row = 0; row < rows8; row += 8) {
      transpose_8x8(src + row * ld_src + col, ld_src, dst + col * ld_dst + row, ld_dst);
    }
  }
  for (int64_t col = cols8; col < cols; ++col) {
    for (int64_t row = 0; row < rows8; ++row) dst[col * ld_dst + row] = src[row * ld_src + col];
  }
  for (int64_t col = 0; col < cols; ++col) {
    for (int64_t row = rows8; row < rows; ++row) dst[col * ld_dst + row] = src[row * ld_src + col];
  }
}

// The block of C's rows and (all parts') columns a thread computes.
struct CBlock {
  int64_t row_begin, row_end, col_begin, col_end;
};

// Thread `index` of `count`'s block of C (M, columns): its rows (whole row tiles) or its
// columns (whole vectors).
CBlock thread_block(int64_t M, int64_t columns, bool split_rows, int64_t count, int64_t index) {
  const int64_t unit = split_rows ? kGemmRowTile : kFloatVectorSize;
  const int64_t length = split_rows ? M : columns;
  const int64_t per_thread = ((length + count - 1) / count + unit - 1) / unit * unit;
  const int64_t begin = std::min(length, index * per_thread);
  const int64_t end = std::min(length, begin + per_thread);
  return split_rows ? CBlock{begin, end, 0, columns} : CBlock{0, M, begin, end};
}

// K in equal chunks of at most kMaxBrgemmDepth; B's blocks of that depth at most
// kMaxBrgemmBlock floats.
struct Blocking {
  int64_t depth, columns;
};

Blocking gemm_blocking(int64_t K) {
  const int64_t chunks = std::max<int64_t>(1, (K + kMaxBrgemmDepth - 1) / kMaxBrgemmDepth);
  const int64_t depth = std::max<int64_t>(1, (K + chunks - 1) / chunks);
  return {depth, std::max(kFloatVectorSize,
                          kMaxBrgemmBlock / depth / kFloatVectorSize * kFloatVectorSize)};
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
  const Blocking blocking = gemm_blocking(p.K);
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
        at::native::cpublas::brgemm(std::min(kGemmRowTile, block.row_end - row), cols, depth,
                                    p.lda, cols, p.ldc, /*add_C=*/k > 0, p.A + row * p.lda + k,
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
  const Blocking blocking = gemm_blocking(p.K);
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
      transpose_impl(p.A + k * p.lda + row, p.lda, depth, rows, packed_a.data(), depth);
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
  const Blocking blocking = gemm_blocking(K);
  for (int64_t col = 0; col < cols; col += blocking.columns) {
    const int64_t block_cols = std::min(blocking.columns, cols - col);
    for (int64_t k = 0; k < K; k += blocking.depth) {
      at::native::cpublas::brgemm(rows, block_cols, std::min(blocking.depth, K - k), lda, ldb, ldc,
                                  add_C || k > 0, A + k, B + k * ldb + col, C + col,
                                  /*is_vnni=*/false);
    }
  }
}

int64_t gemm_block_columns(int64_t K) { return gemm_blocking(K).columns; }

void small_gemm(int64_t rows, int64_t blocks, int64_t b_block_stride, int64_t c_block_stride,
                int64_t col_begin, int64_t col_end, int64_t K, const float* A, int64_t lda,
                const float* B, int64_t ldb, float* C, int64_t ldc, bool add_C) {
  const SmallGemm g{
      {rows, col_end, K, A, lda, /*transpose_a=*/false, B, ldb, C, ldc}, b_block_stride,
      c_block_stride, add_C};
  if (blocks == 4) {
    small_gemm_four_blocks(rows, g, col_begin, col_end);
  } else {
    small_gemm_one_block(rows, g, col_begin, col_end);
  }
}

void small_gemm_transposed_b(int64_t rows, int64_t n, int64_t K, const float* A, int64_t lda,
                             const float* W, int64_t ldw, float* C, int64_t ldc, bool add_C) {
  dot_gemm(rows, n, DotGemm<float>{K, A, lda, W, ldw, C, ldc, add_C});
}

void small_gemm_transposed_b(int64_t rows, int64_t n, int64_t K, const float* A, int64_t lda,
                             const c10::BFloat16* W, int64_t ldw, float* C, int64_t ldc,
                             bool add_C) {
  dot_gemm(rows, n, DotGemm<c10::BFloat16>{K, A, lda, W, ldw, C, ldc, add_C});
}

void transpose(const float* src, int64_t ld_src, int64_t rows, int64_t cols, float* dst,
               int64_t ld_dst) {
  transpose_impl(src, ld_src, rows, cols, dst, ld_dst);
}

void parallel_gemm(const GemmParams& params) {
  const int64_t columns = params.N + params.N2;
  if (params.M == 0 || columns == 0) return;
  const bool split_rows = params.M >= columns;
  const int64_t threads = std::min<int64_t>(
      at::get_num_threads(), split_rows ? (params.M + kGemmRowTile - 1) / kGemmRowTile
                                        : (columns + kFloatVectorSize - 1) / kFloatVectorSize);
#pragma omp parallel num_threads(static_cast<int>(threads))
  {
    const GemmParams p = params;  // see forward_owned_columns in lstm_cpu_layer.cpp
    const CBlock block = thread_block(p.M, columns, split_rows, omp_get_num_threads(),
                                      omp_get_thread_num());
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

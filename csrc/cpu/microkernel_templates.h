// microkernels.h's kernels as templates over an ISA level's shape: `Isa` gives kVectorBytes (the
// width of a vector register) and kRegisters (how many there are), and the register tiles follow
// from them. Each microkernels_<level>.cpp instantiates them with an Isa of its own inside
// functions compiled for that level, into which everything here is inlined; GCC's vector
// extensions then become that level's instructions (a * b + c its FMAs where it has them).
#pragma once

#include <algorithm>
#include <cstring>

#include "cpu/microkernels.h"

#define LSTM_EXT_INLINE inline __attribute__((always_inline))

namespace lstm_ext {
namespace cpu {

// Vector types of kBytes: floats (loadable from any float address), their bits, and the
// bfloat16 bits that widen into them.
template <int64_t kBytes>
struct VectorTypes;

template <>
struct VectorTypes<64> {
  typedef float Float __attribute__((vector_size(64), aligned(4)));
  typedef int32_t Int32 __attribute__((vector_size(64)));
  typedef uint16_t Uint16 __attribute__((vector_size(32), aligned(2)));
};

template <>
struct VectorTypes<32> {
  typedef float Float __attribute__((vector_size(32), aligned(4)));
  typedef int32_t Int32 __attribute__((vector_size(32)));
  typedef uint16_t Uint16 __attribute__((vector_size(16), aligned(2)));
};

template <>
struct VectorTypes<16> {
  typedef float Float __attribute__((vector_size(16), aligned(4)));
  typedef int32_t Int32 __attribute__((vector_size(16)));
  typedef uint16_t Uint16 __attribute__((vector_size(8), aligned(2)));
};

template <typename Isa>
using FloatVector = typename VectorTypes<Isa::kVectorBytes>::Float;

template <typename Isa>
constexpr int64_t kLanes = Isa::kVectorBytes / static_cast<int64_t>(sizeof(float));

// Registers for the sums of a register tile of kRows rows: the rest hold a vector of B (or W)
// and one value (or vector) of A per row.
template <typename Isa, int64_t kRows>
constexpr int64_t kSumRegisters = Isa::kRegisters - kRows - 2;

constexpr int64_t power_of_two_at_most(int64_t n, int64_t cap) {
  int64_t power = 1;
  while (power * 2 <= n && power * 2 <= cap) power *= 2;
  return power;
}

template <typename Isa>
LSTM_EXT_INLINE FloatVector<Isa> load_vector(const float* address) {
  return *reinterpret_cast<const FloatVector<Isa>*>(address);
}

template <typename Isa>
LSTM_EXT_INLINE void store_vector(float* address, const FloatVector<Isa>& value) {
  *reinterpret_cast<FloatVector<Isa>*>(address) = value;
}

// A vector of bfloat16 as floats: a bfloat16 is the high half of a float's bits (exact).
template <typename Isa>
LSTM_EXT_INLINE FloatVector<Isa> load_vector(const c10::BFloat16* address) {
  using Types = VectorTypes<Isa::kVectorBytes>;
  typename Types::Uint16 bits;
  std::memcpy(&bits, address, sizeof(bits));
  const typename Types::Int32 float_bits = __builtin_convertvector(bits, typename Types::Int32)
                                           << 16;
  FloatVector<Isa> values;
  std::memcpy(&values, &float_bits, sizeof(values));
  return values;
}

// The sum of a vector's lanes: halves added until 16 bytes remain.
template <int64_t kBytes>
LSTM_EXT_INLINE float horizontal_sum(const typename VectorTypes<kBytes>::Float& v) {
  if constexpr (kBytes == 16) {
    return (v[0] + v[2]) + (v[1] + v[3]);
  } else {
    typename VectorTypes<kBytes / 2>::Float halves[2];
    std::memcpy(halves, &v, sizeof(v));
    return horizontal_sum<kBytes / 2>(halves[0] + halves[1]);
  }
}

// ---------------------------------------------------------------------------------------------
// small_gemm: rows of A broadcast against vectors of B's rows.

// The tile of kRows rows over kBlocks blocks: kGroup blocks per pass over K (all four where the
// registers allow), kVectors vectors of columns per block.
template <typename Isa, int64_t kRows, int64_t kBlocks>
struct SmallGemmTile {
  static constexpr int64_t kGroup =
      power_of_two_at_most(kSumRegisters<Isa, kRows> / kRows, kBlocks);
  static constexpr int64_t kVectors =
      power_of_two_at_most(kSumRegisters<Isa, kRows> / (kRows * kGroup), 8);
};

// kRows x (kGroup blocks from `block`) x kVectors vectors of C, from column `col`.
template <typename Isa, int64_t kRows, int64_t kGroup, int64_t kVectors>
LSTM_EXT_INLINE void small_gemm_tile(const SmallGemmParams& g, int64_t block, int64_t col) {
  constexpr int64_t kWidth = kLanes<Isa>;
  FloatVector<Isa> sums[kRows][kGroup][kVectors];
  for (int64_t r = 0; r < kRows; ++r) {
    for (int64_t b = 0; b < kGroup; ++b) {
      const float* c = g.C + r * g.ldc + (block + b) * g.c_block_stride + col;
      for (int64_t v = 0; v < kVectors; ++v) {
        sums[r][b][v] = g.add_C ? load_vector<Isa>(c + v * kWidth) : FloatVector<Isa>{};
      }
    }
  }
  for (int64_t k = 0; k < g.K; ++k) {
    const float* b_row = g.B + k * g.ldb + block * g.b_block_stride + col;
    for (int64_t b = 0; b < kGroup; ++b) {
      for (int64_t v = 0; v < kVectors; ++v) {
        const FloatVector<Isa> w = load_vector<Isa>(b_row + b * g.b_block_stride + v * kWidth);
        for (int64_t r = 0; r < kRows; ++r) sums[r][b][v] += g.A[r * g.lda + k] * w;
      }
    }
  }
  for (int64_t r = 0; r < kRows; ++r) {
    for (int64_t b = 0; b < kGroup; ++b) {
      float* c = g.C + r * g.ldc + (block + b) * g.c_block_stride + col;
      for (int64_t v = 0; v < kVectors; ++v) store_vector<Isa>(c + v * kWidth, sums[r][b][v]);
    }
  }
}

// One column of kRows rows and kGroup blocks from `block`, element by element.
template <int64_t kRows, int64_t kGroup>
LSTM_EXT_INLINE void small_gemm_column(const SmallGemmParams& g, int64_t block, int64_t col) {
  for (int64_t r = 0; r < kRows; ++r) {
    for (int64_t b = block; b < block + kGroup; ++b) {
      float* c = g.C + r * g.ldc + b * g.c_block_stride + col;
      float sum = g.add_C ? *c : 0.0f;
      for (int64_t k = 0; k < g.K; ++k) {
        sum += g.A[r * g.lda + k] * g.B[k * g.ldb + b * g.b_block_stride + col];
      }
      *c = sum;
    }
  }
}

// The level's registers used as vectors of half the width, for the last columns of a tile.
template <typename Isa>
struct HalfWidth {
  static constexpr int64_t kVectorBytes = Isa::kVectorBytes / 2;
  static constexpr int64_t kRegisters = Isa::kRegisters;
};

// Columns [col, col_end) of kGroup blocks from `block` in tiles of kVectors vectors, then of
// half as many (narrower tiles keep fewer sums in flight but still beat a loop per vector),
// then in vectors of half the width down to 16 bytes, then one column at a time (a column at a
// time, by scalar multiply-adds over strided rows of B, costs about a vector's worth).
template <typename Isa, int64_t kRows, int64_t kGroup, int64_t kVectors>
LSTM_EXT_INLINE void small_gemm_columns(const SmallGemmParams& g, int64_t block, int64_t col,
                                        int64_t col_end) {
  constexpr int64_t kTileColumns = kVectors * kLanes<Isa>;
  for (; col + kTileColumns <= col_end; col += kTileColumns) {
    small_gemm_tile<Isa, kRows, kGroup, kVectors>(g, block, col);
  }
  if constexpr (kVectors > 1) {
    small_gemm_columns<Isa, kRows, kGroup, kVectors / 2>(g, block, col, col_end);
  } else if constexpr (Isa::kVectorBytes > 16) {
    small_gemm_columns<HalfWidth<Isa>, kRows, kGroup, 1>(g, block, col, col_end);
  } else {
    for (; col < col_end; ++col) small_gemm_column<kRows, kGroup>(g, block, col);
  }
}

template <typename Isa, int64_t kRows, int64_t kBlocks>
LSTM_EXT_INLINE void small_gemm_rows(const SmallGemmParams& g) {
  using Tile = SmallGemmTile<Isa, kRows, kBlocks>;
  for (int64_t block = 0; block < kBlocks; block += Tile::kGroup) {
    small_gemm_columns<Isa, kRows, Tile::kGroup, Tile::kVectors>(g, block, g.col_begin, g.col_end);
  }
}

template <typename Isa, int64_t kBlocks>
LSTM_EXT_INLINE void small_gemm_blocks(const SmallGemmParams& g) {
  switch (g.rows) {
    case 1: small_gemm_rows<Isa, 1, kBlocks>(g); break;
    case 2: small_gemm_rows<Isa, 2, kBlocks>(g); break;
    case 3: small_gemm_rows<Isa, 3, kBlocks>(g); break;
    case 4: small_gemm_rows<Isa, 4, kBlocks>(g); break;
    default: break;
  }
}

template <typename Isa>
LSTM_EXT_INLINE void small_gemm(const SmallGemmParams& g) {
  if (g.blocks == 4) {
    small_gemm_blocks<Isa, 4>(g);
  } else {
    small_gemm_blocks<Isa, 1>(g);
  }
}

// ---------------------------------------------------------------------------------------------
// dot_gemm: vectors of partial sums along K, each summed across its lanes at the end.

// Outputs per tile of kRows rows: a vector of sums per row and output, one of A per row.
template <typename Isa, int64_t kRows>
constexpr int64_t kDotOutputs = std::min<int64_t>(8, kSumRegisters<Isa, kRows> / kRows);

// A's and W's elements [k, K) (fewer than a vector's lanes), zero-padded to a vector: the tail
// runs through the same vector arithmetic as the rest, whatever W's type.
template <typename Isa, typename weight_t>
LSTM_EXT_INLINE FloatVector<Isa> tail_vector(const weight_t* row, int64_t k, int64_t K) {
  float values[kLanes<Isa>] = {};
  for (int64_t i = k; i < K; ++i) values[i - k] = static_cast<float>(row[i]);
  return load_vector<Isa>(values);
}

// kRows x kOutputs dot products from output `output`.
template <typename Isa, int64_t kRows, int64_t kOutputs, typename weight_t>
LSTM_EXT_INLINE void dot_tile(const DotGemmParams<weight_t>& g, int64_t output) {
  constexpr int64_t kWidth = kLanes<Isa>;
  FloatVector<Isa> sums[kRows][kOutputs];
  for (int64_t r = 0; r < kRows; ++r) {
    for (int64_t o = 0; o < kOutputs; ++o) sums[r][o] = FloatVector<Isa>{};
  }
  const int64_t vector_end = g.K / kWidth * kWidth;
  for (int64_t k = 0; k < vector_end; k += kWidth) {
    FloatVector<Isa> a[kRows];
    for (int64_t r = 0; r < kRows; ++r) a[r] = load_vector<Isa>(g.A + r * g.lda + k);
    for (int64_t o = 0; o < kOutputs; ++o) {
      const FloatVector<Isa> w = load_vector<Isa>(g.W + (output + o) * g.ldw + k);
      for (int64_t r = 0; r < kRows; ++r) sums[r][o] += a[r] * w;
    }
  }
  if (vector_end < g.K) {
    FloatVector<Isa> a[kRows];
    for (int64_t r = 0; r < kRows; ++r) a[r] = tail_vector<Isa>(g.A + r * g.lda, vector_end, g.K);
    for (int64_t o = 0; o < kOutputs; ++o) {
      const FloatVector<Isa> w = tail_vector<Isa>(g.W + (output + o) * g.ldw, vector_end, g.K);
      for (int64_t r = 0; r < kRows; ++r) sums[r][o] += a[r] * w;
    }
  }
  for (int64_t r = 0; r < kRows; ++r) {
    for (int64_t o = 0; o < kOutputs; ++o) {
      const float sum = horizontal_sum<Isa::kVectorBytes>(sums[r][o]);
      float* c = g.C + r * g.ldc + output + o;
      *c = g.add_C ? *c + sum : sum;
    }
  }
}

template <typename Isa, int64_t kRows, typename weight_t>
LSTM_EXT_INLINE void dot_rows(const DotGemmParams<weight_t>& g) {
  constexpr int64_t kOutputs = kDotOutputs<Isa, kRows>;
  int64_t output = 0;
  for (; output + kOutputs <= g.n; output += kOutputs) dot_tile<Isa, kRows, kOutputs>(g, output);
  for (; output < g.n; ++output) dot_tile<Isa, kRows, 1>(g, output);
}

template <typename Isa, typename weight_t>
LSTM_EXT_INLINE void dot_gemm(const DotGemmParams<weight_t>& g) {
  switch (g.rows) {
    case 1: dot_rows<Isa, 1>(g); break;
    case 2: dot_rows<Isa, 2>(g); break;
    case 3: dot_rows<Isa, 3>(g); break;
    case 4: dot_rows<Isa, 4>(g); break;
    default: break;
  }
}

// ---------------------------------------------------------------------------------------------
// Transposes.

typedef float Float8 __attribute__((vector_size(32), aligned(4)));
typedef int32_t Int8 __attribute__((vector_size(32)));

// dst (8 x 8; row stride ld_dst) = src (8 x 8; row stride ld_src) transposed, in registers (two
// per 8 floats where vectors are 16 bytes).
template <typename Isa>
LSTM_EXT_INLINE void transpose_8x8(const float* src, int64_t ld_src, float* dst, int64_t ld_dst) {
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
      quads[i + 2 * half] =
          __builtin_shuffle(pairs[i + half], pairs[i + half + 2], Int8{0, 1, 8, 9, 4, 5, 12, 13});
      quads[i + 2 * half + 1] =
          __builtin_shuffle(pairs[i + half], pairs[i + half + 2], Int8{2, 3, 10, 11, 6, 7, 14, 15});
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

// dst (cols, ld_dst) = src (rows, ld_src) transposed; 8 x 8 blocks in registers, eight rows of
// dst at a time, each written front to back (eight store streams); the edges element by element.
template <typename Isa>
LSTM_EXT_INLINE void transpose(const float* src, int64_t ld_src, int64_t rows, int64_t cols,
                               float* dst, int64_t ld_dst) {
  const int64_t cols8 = cols / 8 * 8;
  const int64_t rows8 = rows / 8 * 8;
  for (int64_t col = 0; col < cols8; col += 8) {
    for (int64_t row = 0; row < rows8; row += 8) {
      transpose_8x8<Isa>(src + row * ld_src + col, ld_src, dst + col * ld_dst + row, ld_dst);
    }
  }
  for (int64_t col = cols8; col < cols; ++col) {
    for (int64_t row = 0; row < rows8; ++row) dst[col * ld_dst + row] = src[row * ld_src + col];
  }
  for (int64_t col = 0; col < cols; ++col) {
    for (int64_t row = rows8; row < rows; ++row) dst[col * ld_dst + row] = src[row * ld_src + col];
  }
}

// ---------------------------------------------------------------------------------------------
// The cells: lstm_math.h's element functions over a block of a step, vectorised by the compiler
// for the level. The element functions test a pointer of the params for null (the bias, the
// second addend of dL/dh) before loading through it; the loop runs in two copies, one for each
// outcome, in which the compiler knows it: without that branch it vectorises the loop where no
// masked loads are at hand (AVX2, SSE2, NEON). The params are a local copy, whose fields the
// compiler keeps in registers (the caller's struct could alias the floats the loop stores).

template <typename Params, typename Element>
LSTM_EXT_INLINE void element_rows(const Params& p, int64_t row_begin, int64_t row_end,
                                  int64_t col_begin, int64_t col_end, Element element) {
  for (int64_t row = row_begin; row < row_end; ++row) {
#pragma omp simd
    for (int64_t col = col_begin; col < col_end; ++col) element(p, row, col);
  }
}

struct ForwardElement {
  LSTM_EXT_INLINE void operator()(const ForwardStepParams<float>& p, int64_t row,
                                  int64_t col) const {
    lstm_forward_element<float, float>(p, row, col);
  }
};

struct BackwardElement {
  LSTM_EXT_INLINE void operator()(const BackwardStepParams<float>& p, int64_t row,
                                  int64_t col) const {
    lstm_backward_element<float, float>(p, row, col);
  }
};

// The element loop, in one copy where the params' pointer `nullable` is null and one where it
// is not.
template <typename Element, typename Params, typename Pointer>
LSTM_EXT_INLINE void cell(const Params& params, Pointer Params::* nullable, int64_t row_begin,
                          int64_t row_end, int64_t col_begin, int64_t col_end) {
  const Params p = params;
  if (p.*nullable != nullptr) {
    element_rows(p, row_begin, row_end, col_begin, col_end, Element());
  } else {
    element_rows(p, row_begin, row_end, col_begin, col_end, Element());
  }
}

}  // namespace cpu
}  // namespace lstm_ext

// The definitions of one level's Microkernels, `kernels_function` returning them, in functions
// compiled with `target_attribute` (empty for the baseline) around the templates above.
#define LSTM_EXT_DEFINE_MICROKERNELS(Isa, name, target_attribute, kernels_function)                \
  namespace {                                                                                      \
  target_attribute void forward_cell_##Isa(const ForwardStepParams<float>& params,                 \
                                           int64_t row_begin, int64_t row_end, int64_t col_begin,  \
                                           int64_t col_end) {                                      \
    cell<ForwardElement>(params, &ForwardStepParams<float>::bias, row_begin, row_end, col_begin,   \
                         col_end);                                                                 \
  }                                                                                                \
  target_attribute void backward_cell_##Isa(const BackwardStepParams<float>& params,               \
                                            int64_t row_begin, int64_t row_end, int64_t col_begin, \
                                            int64_t col_end) {                                     \
    cell<BackwardElement>(params, &BackwardStepParams<float>::grad_hidden_recurrent, row_begin,    \
                          row_end, col_begin, col_end);                                            \
  }                                                                                                \
  target_attribute void small_gemm_##Isa(const SmallGemmParams& params) {                          \
    small_gemm<Isa>(params);                                                                       \
  }                                                                                                \
  target_attribute void dot_gemm_float_##Isa(const DotGemmParams<float>& params) {                 \
    dot_gemm<Isa>(params);                                                                         \
  }                                                                                                \
  target_attribute void dot_gemm_bfloat16_##Isa(const DotGemmParams<c10::BFloat16>& params) {      \
    dot_gemm<Isa>(params);                                                                         \
  }                                                                                                \
  target_attribute void transpose_##Isa(const float* src, int64_t ld_src, int64_t rows,            \
                                        int64_t cols, float* dst, int64_t ld_dst) {                \
    transpose<Isa>(src, ld_src, rows, cols, dst, ld_dst);                                          \
  }                                                                                                \
  }                                                                                                \
  const Microkernels* kernels_function() {                                                         \
    static const Microkernels kernels = {name,                                                     \
                                         Isa::kVectorBytes / 4,                                    \
                                         forward_cell_##Isa,                                       \
                                         backward_cell_##Isa,                                      \
                                         small_gemm_##Isa,                                         \
                                         dot_gemm_float_##Isa,                                     \
                                         dot_gemm_bfloat16_##Isa,                                  \
                                         transpose_##Isa};                                         \
    return &kernels;                                                                               \
  }

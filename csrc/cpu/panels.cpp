#include "cpu/panels.h"

#include <cstring>

#include "cpu/gemm.h"
#include "cpu/isa.h"

namespace lstm_ext {
namespace cpu {
namespace {

// gates [+]= A W^T for `units` through the level's dot-product kernel, gate by gate.
template <typename weight_t>
void dot_products_into_gates(int64_t rows, const float* A, int64_t K, const weight_t* w, int64_t H,
                             float* gates, IndexRange units, bool reversed,
                             void (*dot_gemm)(const DotGemmParams<weight_t>&)) {
  if (rows == 0) return;
  for (int64_t step = 0; step < 4; ++step) {
    const int64_t gate = reversed ? 3 - step : step;
    dot_gemm({rows, units.size(), K, A, K, w + (gate * H + units.begin) * K, K,
              gates + gate * H + units.begin, 4 * H, /*add_C=*/true});
  }
}

}  // namespace

BlockedPanel blocked_panel(float* data, int64_t K, int64_t n) {
  return {data, K, n, gemm_block_columns(K)};
}

BlockedPanel column_panel(float* scratch, int64_t K, IndexRange columns) {
  return blocked_panel(scratch + K * columns.begin, K, columns.size());
}

BlockedPanel gate_panels(float* scratch, int64_t K, IndexRange units) {
  return blocked_panel(scratch + K * 4 * units.begin, K, units.size());
}

void pack_transposed(const float* rows, BlockedPanel panel) {
  const auto transpose = microkernels().transpose;
  for (int64_t col = 0; col < panel.n; col += panel.block_columns) {
    const int64_t cols = panel.block_size(col);
    transpose(rows + col * panel.K, panel.K, cols, panel.K, panel.data + col * panel.K, cols);
  }
}

void pack_columns(const float* w, int64_t ldw, int64_t begin, BlockedPanel panel) {
  for (int64_t col = 0; col < panel.n; col += panel.block_columns) {
    const int64_t cols = panel.block_size(col);
    float* block = panel.data + col * panel.K;
    for (int64_t row = 0; row < panel.K; ++row) {
      std::memcpy(block + row * cols, w + row * ldw + begin + col, cols * sizeof(float));
    }
  }
}

void pack_gate_panels(const float* w, int64_t H, IndexRange units, BlockedPanel panels) {
  for (int64_t gate = 0; gate < 4; ++gate) {
    BlockedPanel gate_panel = panels;
    gate_panel.data += gate * panels.K * panels.n;
    pack_transposed(w + (gate * H + units.begin) * panels.K, gate_panel);
  }
}

void add_to_gates(int64_t rows, const float* A, int64_t lda, const BlockedPanel& w, int64_t H,
                  float* gates, IndexRange units, bool add_C, bool reversed) {
  if (rows == 0) return;
  const int64_t gate_stride = w.K * w.n;
  float* gate_columns = gates + units.begin;
  const auto small_gemm = microkernels().small_gemm;
  for (int64_t col = 0; col < w.n; col += w.block_columns) {
    const int64_t cols = w.block_size(col);
    if (rows <= kSmallRows) {
      small_gemm({rows, /*blocks=*/4, gate_stride, H, 0, cols, w.K, A, lda, w.block(col), cols,
                  gate_columns + col, 4 * H, add_C});
      continue;
    }
    for (int64_t step = 0; step < 4; ++step) {
      const int64_t gate = reversed ? 3 - step : step;
      gemm_block(rows, cols, w.K, lda, cols, 4 * H, add_C, A, w.block(col) + gate * gate_stride,
                 gate_columns + gate * H + col);
    }
  }
}

void add_to_gates_as_stored(int64_t rows, const float* A, int64_t K, const float* w, int64_t H,
                            float* gates, IndexRange units, bool reversed) {
  dot_products_into_gates(rows, A, K, w, H, gates, units, reversed, microkernels().dot_gemm_float);
}

void add_to_gates_as_stored(int64_t rows, const float* A, int64_t K, const c10::BFloat16* w,
                            int64_t H, float* gates, IndexRange units, bool reversed) {
  dot_products_into_gates(rows, A, K, w, H, gates, units, reversed,
                          microkernels().dot_gemm_bfloat16);
}

void multiply_as_stored(int64_t rows, const float* A, int64_t lda, const float* w, int64_t K,
                        int64_t n, float* C, int64_t ldc) {
  if (rows == 0) return;
  microkernels().dot_gemm_float({rows, n, K, A, lda, w, K, C, ldc, /*add_C=*/false});
}

void multiply_columns(int64_t rows, const float* A, int64_t lda, const BlockedPanel& w, float* C,
                      int64_t ldc) {
  if (rows == 0) return;
  const auto small_gemm = microkernels().small_gemm;
  for (int64_t col = 0; col < w.n; col += w.block_columns) {
    const int64_t cols = w.block_size(col);
    if (rows <= kSmallRows) {
      small_gemm({rows, /*blocks=*/1, 0, 0, 0, cols, w.K, A, lda, w.block(col), cols, C + col, ldc,
                  /*add_C=*/false});
    } else {
      gemm_block(rows, cols, w.K, lda, cols, ldc, /*add_C=*/false, A, w.block(col), C + col);
    }
  }
}

}  // namespace cpu
}  // namespace lstm_ext

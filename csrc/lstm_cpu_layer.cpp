// The float32 layer on the CPU, forward and backward step loops, each in one parallel region.
//
// Each thread owns a block of hidden units (and, with the projection, a block of its output
// columns) for the whole layer. Forward: it projects the input into the four gate column blocks
// of its units (a chunk of steps at a time), adds h_{t-1} W_hh^T into them and applies the
// cell, all in its own columns. Backward: it applies the backward cell to its units, then
// computes its columns of dL/dh_{t-1} = dL/dgates W_hh. Only the GEMM that reads a whole row of
// the step before needs the other threads' columns, hence one barrier per step (two with the
// projection). A barrier between threads that stay in the region costs far less than starting
// a parallel region per step, which is what dominated small batches.
#include <ATen/Parallel.h>
#include <ATen/native/CPUBlas.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <thread>

#include "lstm_cpu.h"
#include "lstm_cpu_gemm.h"

#if defined(CPUBLAS_BRGEMM_F32F32F32) && defined(_OPENMP)
#include <omp.h>

namespace lstm_ext {
namespace cpu {
namespace {

// Multiply-adds of the largest step's recurrent GEMM below which a layer runs on one thread:
// smaller steps do not repay a barrier (B=1 with H=R=128 gains from two threads).
constexpr int64_t kParallelStepGrain = 32768;

// Thread blocks of hidden units and projection columns are multiples of one 64-byte line.
constexpr int64_t kVectorColumns = 16;

// Rows per brgemm call of the input projection (its measured best tile height), and with input
// weights that stream from beyond L2 (see streams_input_weights), where B=64, I=H=1024 ran
// 5-8% faster with 256 than with 64.
constexpr int64_t kProjectionRowTile = 64;
constexpr int64_t kStreamingProjectionRowTile = 256;

// The barrier between the steps of a team of threads: a counter and a generation, spinning with
// pause (then yielding to the scheduler, should the threads outnumber the cores). It made the B=1
// (H=128) forward 5% faster than OpenMP's barrier on a 2-core Xeon, where that is the step's
// largest cost after its GEMM.
class StepBarrier {
 public:
  void set_threads(int64_t threads) { threads_ = threads; }

  void wait() {
    if (threads_ == 1) return;
    // The phase cannot end before this thread arrives: the generation read here is its own.
    const int64_t generation = generation_.load(std::memory_order_acquire);
    if (arrived_.fetch_add(1, std::memory_order_acq_rel) == threads_ - 1) {
      arrived_.store(0, std::memory_order_relaxed);
      generation_.store(generation + 1, std::memory_order_release);
      return;
    }
    for (int64_t spins = 0; generation_.load(std::memory_order_acquire) == generation; ++spins) {
      if (spins < kSpinsBeforeYield) {
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
      } else {
        std::this_thread::yield();
      }
    }
  }

 private:
  static constexpr int64_t kSpinsBeforeYield = int64_t(1) << 16;
  int64_t threads_ = 1;
  alignas(64) std::atomic<int64_t> arrived_{0};
  alignas(64) std::atomic<int64_t> generation_{0};
};

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

// A (K, n) weight panel, stored as column blocks of gemm_block_columns(K): block after block,
// each (K, block columns) contiguous. A GEMM call then reads its block of B as one sequential
// stream, which the prefetchers follow; rows of a wider panel (or of a full weight) lie kilobytes
// apart, and a block streamed from L3 that way left the brgemm kernel waiting. Measured on a
// 2-core Xeon (Skylake), B=64 T=100: forward I=16 H=1024 1.9x faster than with whole (K, n)
// panels, I=512 H=1024 P=256 1.2x; training at I=H=1024 1.6x.
struct BlockedPanel {
  float* data;
  int64_t K;
  int64_t n;
  int64_t block_columns;
  const float* block(int64_t col) const { return data + col * K; }  // from column `col`
  int64_t block_size(int64_t col) const { return std::min(block_columns, n - col); }
};

BlockedPanel blocked_panel(float* data, int64_t K, int64_t n) {
  return {data, K, n, gemm_block_columns(K)};
}

// panel = rows (n, K; row stride K) transposed.
void pack_transposed(const float* rows, BlockedPanel panel) {
  for (int64_t col = 0; col < panel.n; col += panel.block_columns) {
    const int64_t cols = panel.block_size(col);
    transpose(rows + col * panel.K, panel.K, cols, panel.K, panel.data + col * panel.K, cols);
  }
}

// panel = the columns [begin, begin + n) of W (K, ldw).
void pack_columns(const float* w, int64_t ldw, int64_t begin, BlockedPanel panel) {
  for (int64_t col = 0; col < panel.n; col += panel.block_columns) {
    const int64_t cols = panel.block_size(col);
    float* block = panel.data + col * panel.K;
    for (int64_t row = 0; row < panel.K; ++row) {
      std::memcpy(block + row * cols, w + row * ldw + begin + col, cols * sizeof(float));
    }
  }
}

// A thread's share of a gate weight W (4H, K), its hidden units `units` of each gate, as four
// transposed (K, units) panels one after the other. Threads' regions follow each other in the
// (K, 4H) scratch: this one starts at K * 4 * units.begin.
BlockedPanel pack_gate_panels(const float* w, int64_t K, int64_t H, ColumnRange units,
                              float* scratch) {
  const BlockedPanel panels = blocked_panel(scratch + K * 4 * units.begin, K, units.size());
  for (int64_t gate = 0; gate < 4; ++gate) {
    BlockedPanel gate_panel = panels;
    gate_panel.data += gate * K * units.size();
    pack_transposed(w + (gate * H + units.begin) * K, gate_panel);
  }
  return panels;
}

// gates (rows, 4H) += A (rows, K) W^T for the units `units` of all four gates (w: the four gate
// panels of pack_gate_panels).
void add_to_gates(int64_t rows, const float* A, int64_t lda, const BlockedPanel& w, int64_t H,
                  float* gates, ColumnRange units) {
  if (rows == 0 || units.size() == 0) return;
  const int64_t gate_stride = w.K * w.n;
  float* gate_columns = gates + units.begin;
  for (int64_t col = 0; col < w.n; col += w.block_columns) {
    const int64_t cols = w.block_size(col);
    if (rows <= kSmallRows) {
      small_gemm(rows, /*blocks=*/4, gate_stride, H, 0, cols, w.K, A, lda, w.block(col), cols,
                 gate_columns + col, 4 * H, /*add_C=*/true);
      continue;
    }
    for (int64_t gate = 0; gate < 4; ++gate) {
      gemm_block(rows, cols, w.K, lda, cols, 4 * H, /*add_C=*/true, A,
                 w.block(col) + gate * gate_stride, gate_columns + gate * H + col);
    }
  }
}

// C (rows, w.n) = A (rows, w.K) w.
void multiply_columns(int64_t rows, const float* A, int64_t lda, const BlockedPanel& w, float* C,
                      int64_t ldc) {
  if (rows == 0) return;
  for (int64_t col = 0; col < w.n; col += w.block_columns) {
    const int64_t cols = w.block_size(col);
    if (rows <= kSmallRows) {
      small_gemm(rows, /*blocks=*/1, 0, 0, 0, cols, w.K, A, lda, w.block(col), cols, C + col, ldc,
                 /*add_C=*/false);
    } else {
      gemm_block(rows, cols, w.K, lda, cols, ldc, /*add_C=*/false, A, w.block(col), C + col);
    }
  }
}

void forward_owned_columns(const LayerForwardParams<float>& params, ColumnRange units,
                           ColumnRange projected, int64_t projection_row_tile,
                           StepBarrier& barrier) {
  // Read through a copy on this thread's own stack. The caller's struct lies on the main
  // thread's stack, and its fields, reloaded between stores to the buffers, stalled whenever it
  // shared its offset within 4 KB with them (4K aliasing): the forward time of a large layer
  // swung by 10-15% with the size of the process environment, which moves that stack.
  const LayerForwardParams<float> p = params;
  const int64_t I = p.input_size;
  const int64_t H = p.hidden_size;
  const int64_t R = p.recurrent_size;
  const int64_t G = 4 * H;
  const bool has_projection = p.w_hr != nullptr;
  // The recurrent state's columns this thread writes into h_n: its hidden units, or with the
  // projection its projection columns.
  const ColumnRange state = has_projection ? projected : units;
  const BlockedPanel w_ih = pack_gate_panels(p.w_ih, I, H, units, p.w_ih_t);
  const BlockedPanel w_hh = pack_gate_panels(p.w_hh, R, H, units, p.w_hh_t);
  // The projection's columns: W_hr's rows `projected` transposed into an (H, projected) panel.
  const BlockedPanel w_hr =
      blocked_panel(has_projection ? p.w_hr_t + H * projected.begin : nullptr, H, projected.size());
  if (has_projection) pack_transposed(p.w_hr + projected.begin * H, w_hr);
  for (int64_t k = 0; k < p.num_steps; ++k) {
    const StepLayout& step = p.steps[k];
    if (step.project_rows > 0 && units.size() > 0) {
      // The bias first, then the input projection added to it, a tile of rows at a time.
      for (int64_t row = 0; row < step.project_rows; row += projection_row_tile) {
        const int64_t rows = std::min(projection_row_tile, step.project_rows - row);
        float* gate_tile = p.gates + (step.project_gate_row + row) * G;
        for (int64_t r = 0; r < rows; ++r) {
          for (int64_t gate = 0; gate < 4; ++gate) {
            float* gate_row = gate_tile + r * G + gate * H + units.begin;
            if (p.bias != nullptr) {
              std::memcpy(gate_row, p.bias + gate * H + units.begin, units.size() * sizeof(float));
            } else {
              std::fill_n(gate_row, units.size(), 0.0f);
            }
          }
        }
        add_to_gates(rows, p.input + (step.project_row + row) * I, I, w_ih, H, gate_tile, units);
      }
    }
    if (step.rows == 0) continue;

    float* step_gates = p.gates + step.gate_row * G;
    const int64_t starting_rows = step.rows - step.carried_rows;
    add_to_gates(step.carried_rows, p.output + step.prev_row * R, R, w_hh, H, step_gates, units);
    add_to_gates(starting_rows, p.h0 + step.carried_rows * R, R, w_hh, H,
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
      barrier.wait();
      multiply_columns(step.rows, cell.hidden, H, w_hr, p.output + step.row * R + projected.begin,
                       R);
    }
    for (int64_t row = step.finished_from; row < step.rows; ++row) {
      std::memcpy(p.h_n + row * R + state.begin, p.output + (step.row + row) * R + state.begin,
                  state.size() * sizeof(float));
      std::memcpy(p.c_n + row * H + units.begin, cell.cell + row * H + units.begin,
                  units.size() * sizeof(float));
    }
    // The next step's recurrent GEMM reads every column of this step's output.
    barrier.wait();
  }
}

// Backward for the hidden units `units` and the recurrent-state columns `state` (the units, or
// with the projection the thread's projection columns).
void backward_owned_columns(const LayerBackwardParams<float>& params, ColumnRange units,
                            ColumnRange state, StepBarrier& barrier) {
  const LayerBackwardParams<float> p = params;  // see forward_owned_columns
  const int64_t H = p.hidden_size;
  const int64_t R = p.recurrent_size;
  const int64_t G = 4 * H;
  const bool has_projection = p.w_hr != nullptr;
  // The columns of W_hh (and W_hr) this thread multiplies by, copied into column-blocked panels
  // (regions of the scratch in thread order) that its GEMMs stream sequentially.
  const BlockedPanel w_hh_panel = blocked_panel(p.w_hh_columns + G * state.begin, G, state.size());
  pack_columns(p.w_hh, R, state.begin, w_hh_panel);
  const BlockedPanel w_hr_panel = blocked_panel(
      has_projection ? p.w_hr_columns + R * units.begin : nullptr, R, units.size());
  if (has_projection) pack_columns(p.w_hr, H, units.begin, w_hr_panel);
  for (int64_t k = p.num_steps - 1; k >= 0; --k) {
    const StepLayout& step = p.steps[k];
    if (step.rows == 0) continue;
    BackwardStepParams<float> cell;
    if (has_projection) {
      // dL/d(projected h_t) = the output's gradient + the recurrent one; dL/dh_t before the
      // projection reads all of its columns.
      float* grad_projected = p.grad_projected + step.row * R;
      const float* grad_output = p.grad_output + step.row * R;
      for (int64_t row = 0; row < step.rows; ++row) {
        for (int64_t col = state.begin; col < state.end; ++col) {
          grad_projected[row * R + col] =
              grad_output[row * R + col] + p.grad_hidden_state[row * R + col];
        }
      }
      barrier.wait();
      multiply_columns(step.rows, grad_projected, R, w_hr_panel, p.grad_hidden + units.begin, H);
      cell.grad_hidden = p.grad_hidden;
      cell.grad_hidden_stride = H;
      cell.grad_hidden_recurrent = nullptr;
    } else {
      cell.grad_hidden = p.grad_output + step.row * R;
      cell.grad_hidden_stride = R;
      cell.grad_hidden_recurrent = p.grad_hidden_state;
    }
    cell.gates = p.gates + step.row * G;
    cell.cell = p.cells + step.row * H;
    cell.prev_cell = p.cells + step.prev_row * H;
    cell.initial_cell = p.c0;
    cell.grad_cell = p.grad_cell_state;
    cell.grad_gates = p.grad_gates + step.row * G;
    cell.rows = step.rows;
    cell.hidden_size = H;
    cell.carried_rows = step.carried_rows;
    if (units.size() > 0) backward_block_float(cell, 0, step.rows, units.begin, units.end);
    // dL/dh_{t-1} reads every gate column of the step.
    barrier.wait();
    multiply_columns(step.rows, cell.grad_gates, G, w_hh_panel, p.grad_hidden_state + state.begin,
                     R);
  }
}

// Threads for a layer whose largest step has `max_rows` rows: one for small steps, and at most
// one per vector block of hidden units.
int64_t layer_threads(int64_t max_rows, int64_t H, int64_t R) {
  const int64_t step_work = max_rows * 4 * H * R;
  const int64_t useful_threads = std::max<int64_t>(1, (H + kVectorColumns - 1) / kVectorColumns);
  return step_work < kParallelStepGrain
             ? 1
             : std::min<int64_t>(at::get_num_threads(), useful_threads);
}

int64_t max_step_rows(const StepLayout* steps, int64_t num_steps) {
  int64_t max_rows = 0;
  for (int64_t k = 0; k < num_steps; ++k) max_rows = std::max(max_rows, steps[k].rows);
  return max_rows;
}

}  // namespace

// The team may be smaller than asked (inside another parallel region it is one thread): the
// columns are split over the threads that actually run.
void layer_forward_float(const LayerForwardParams<float>& p) {
  const int64_t H = p.hidden_size;
  const int64_t P = p.w_hr != nullptr ? p.recurrent_size : 0;
  const int64_t threads =
      layer_threads(max_step_rows(p.steps, p.num_steps), H, p.recurrent_size);
  const int64_t projection_row_tile = streams_input_weights(p.input_size, H)
                                          ? kStreamingProjectionRowTile
                                          : kProjectionRowTile;
  StepBarrier barrier;
#pragma omp parallel num_threads(static_cast<int>(threads))
  {
    const int64_t count = omp_get_num_threads();
    const int64_t index = omp_get_thread_num();
#pragma omp single
    barrier.set_threads(count);
    forward_owned_columns(p, owned_columns(H, count, index), owned_columns(P, count, index),
                          projection_row_tile, barrier);
    at::native::cpublas::brgemm_release(/*is_vnni=*/false);
  }
}

void layer_backward_float(const LayerBackwardParams<float>& p) {
  const int64_t H = p.hidden_size;
  const int64_t R = p.recurrent_size;
  const int64_t threads = layer_threads(max_step_rows(p.steps, p.num_steps), H, R);
  StepBarrier barrier;
#pragma omp parallel num_threads(static_cast<int>(threads))
  {
    const int64_t count = omp_get_num_threads();
    const int64_t index = omp_get_thread_num();
#pragma omp single
    barrier.set_threads(count);
    const ColumnRange units = owned_columns(H, count, index);
    backward_owned_columns(p, units, p.w_hr != nullptr ? owned_columns(R, count, index) : units,
                           barrier);
    at::native::cpublas::brgemm_release(/*is_vnni=*/false);
  }
}

}  // namespace cpu
}  // namespace lstm_ext

#endif

// The float32 layer on the CPU, forward and backward step loops, each in one parallel region.
//
// The work of a step is split into items of hidden units (in the forward of a step of 128 rows
// or more, of a band of its rows; see RowBands) and, with the projection, items of its output
// columns, which the threads claim (see StepItems). Forward: an item projects the input into the
// four gate columns of its units (a chunk of steps at a time), adds h_{t-1} W_hh^T into them and
// applies the cell. Backward: an item applies the backward cell to
// its units, or computes its columns of dL/dh_{t-1} = dL/dgates W_hh. Only a GEMM that reads a
// whole row of the phase before needs the other items' columns, hence one barrier per step (two
// with the projection). A barrier between threads that stay in the region costs far less than
// starting a parallel region per step, which is what dominated small batches.
#include <ATen/Parallel.h>
#include <ATen/native/CPUBlas.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <thread>
#include <vector>

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

// Work items of hidden units and projection columns are multiples of one 64-byte line.
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

// Columns or rows [begin, end).
struct IndexRange {
  int64_t begin;
  int64_t end;
  int64_t size() const { return end - begin; }
};

// Work items per thread in each phase of a step (fewer where kMinItemColumns allows no more):
// enough for a fast core to take over the last items of a slow one.
constexpr int64_t kItemsPerThread = 4;

// Columns of a work item at least: narrower GEMM calls cost more than they balance. On a 2-core
// Xeon, 16-column items made B=1 H=128 trainings 16% slower than one item per thread, 32-column
// items B=256 H=256 forwards 15% slower; with 64 (alternated with the static split of one block
// per thread): B=256 H=256 forward 0.98-0.99x the time, B=1 H=128 1.01-1.02x, B=1 and B=8 at
// H=512 0.89x, B=64 H=512 0.91-0.97x.
constexpr int64_t kMinItemColumns = 64;

// [0, total) columns as work items of `width` columns (the last one may be narrower).
struct ColumnItems {
  int64_t total;
  int64_t width;
  int64_t count() const { return (total + width - 1) / width; }
  IndexRange operator[](int64_t item) const {
    return {item * width, std::min(total, (item + 1) * width)};
  }
};

// Whole vectors per item, about kItemsPerThread items per thread, each of kMinItemColumns at
// least unless that left a thread without one.
ColumnItems column_items(int64_t total, int64_t threads) {
  const auto vectors_for = [](int64_t columns, int64_t parts) {
    const int64_t per_part = (columns + parts - 1) / parts;
    return (per_part + kVectorColumns - 1) / kVectorColumns * kVectorColumns;
  };
  const int64_t width =
      std::max(vectors_for(total, threads * kItemsPerThread),
               std::min(kMinItemColumns, vectors_for(total, threads)));
  return {total, std::max(width, kVectorColumns)};
}

// The work items of one phase of the steps, claimed by a team's threads. Each thread has a home
// range (the items a static split would give it), claims it in order, so that step after step it
// mostly reads the same weight panels, and then claims what is left of the others' ranges. No
// step then waits for a slow core: on the shared 2-core VMs we measure on, one vCPU often ran at
// half speed for seconds, and with a static split the other sat at every barrier meanwhile.
// Each home range's claims are one atomic word tagged with the round, a number the caller gives
// each run (from 1, new in each run, and a barrier between two runs), so rounds need no reset.
// Which thread runs an item does not change its arithmetic: results stay deterministic.
class StepItems {
 public:
  // By one thread, followed by a barrier before the first run.
  void set_up(int64_t threads, int64_t count) {
    threads_ = threads;
    count_ = count;
    claims_ = std::vector<Claim>(threads);
  }

  // work(item) for the home items of `thread` only (no claims), e.g. to pack their panels.
  template <typename Work>
  void for_home_items(int64_t thread, const Work& work) const {
    for (int64_t item = home_begin(thread); item < home_begin(thread + 1); ++item) work(item);
  }

  template <typename Work>
  void run(int64_t thread, uint64_t round, const Work& work) {
    for (int64_t offset = 0; offset < threads_; ++offset) {
      const int64_t owner = (thread + offset) % threads_;
      const uint64_t begin = home_begin(owner);
      const uint64_t end = home_begin(owner + 1);
      std::atomic<uint64_t>& claim = claims_[owner].next;
      uint64_t seen = claim.load(std::memory_order_relaxed);
      for (;;) {
        const uint64_t next = (seen >> kRoundShift) == round ? seen & kItemMask : begin;
        if (next >= end) break;
        const uint64_t claimed = (round << kRoundShift) | (next + 1);
        // Only the claim needs to be atomic: the items' results reach the other threads through
        // the barrier after the run.
        if (claim.compare_exchange_weak(seen, claimed, std::memory_order_relaxed)) {
          work(static_cast<int64_t>(next));
          seen = claimed;
        }
      }
    }
  }

 private:
  static constexpr int kRoundShift = 32;
  static constexpr uint64_t kItemMask = (uint64_t(1) << kRoundShift) - 1;
  struct alignas(64) Claim {
    std::atomic<uint64_t> next{0};  // round << kRoundShift | the owner's next unclaimed item
  };
  int64_t home_begin(int64_t thread) const { return count_ * thread / threads_; }
  int64_t threads_ = 1;
  int64_t count_ = 0;
  std::vector<Claim> claims_;
};

// Rows of a step per band of the forward's work items at least (see RowBands). Smaller bands
// were mixed: 16 rows at B=64 I=H=512 0.97-0.99x the time, but at I=H=256 1.06x; 32 rows at
// B=128 I=H=256 1.03x; 16 or 32 at B=256 1.02-1.03x.
constexpr int64_t kMinBandRows = 64;

// The forward of a step with many rows splits each item of hidden units into bands of rows:
// an item's gates, just written by its GEMM, are still in L1 when its cell reads them, and the
// smaller items keep a core from waiting long at the barrier for the other's last item.
// Alternated call by call on a 2-core Xeon (41-81 rounds, medians), forwards with 64-row bands
// against whole steps: B=256 T=50 I=H=256 0.88x, 0.99x and 1.01x the time in three runs (the
// tenth percentile 0.86x, 0.90x, 1.0x), B=128 and B=256 at I=H=512 0.99x; B=256 training 1.01x.
struct RowBands {
  int64_t count = 1;
  // The band's rows [begin, end) of a step of `rows` rows (some bands empty when rows < count).
  IndexRange operator()(int64_t band, int64_t rows) const {
    return {rows * band / count, rows * (band + 1) / count};
  }
};

RowBands row_bands(int64_t max_rows) {
  return {std::max<int64_t>(1, max_rows / kMinBandRows)};
}

// What a layer's threads share: the step barrier and the claims of the two kinds of work items,
// hidden units (in the forward, a band of rows of them: `unit_work` counts bands x unit items,
// band after band of a unit item) and recurrent-state columns (the projection's columns;
// without the projection, the hidden units again, which only the backward uses).
struct Team {
  StepBarrier barrier;
  ColumnItems unit_items;
  ColumnItems state_items;
  RowBands bands;
  StepItems unit_work;
  StepItems state_work;

  void set_up(int64_t threads, int64_t H, int64_t R, RowBands row_bands = RowBands()) {
    barrier.set_threads(threads);
    unit_items = column_items(H, threads);
    state_items = column_items(R, threads);
    bands = row_bands;
    unit_work.set_up(threads, unit_items.count() * bands.count);
    state_work.set_up(threads, state_items.count());
  }
};

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

// The panel of the columns `columns` in a scratch of such panels in column order.
BlockedPanel column_panel(float* scratch, int64_t K, IndexRange columns) {
  return blocked_panel(scratch + K * columns.begin, K, columns.size());
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

// The gate panels of the hidden units `units` of a gate weight (4H, K): four transposed
// (K, units) panels one after the other, in a (K, 4H) scratch of such panels in unit order
// (those of `units` start at K * 4 * units.begin).
BlockedPanel gate_panels(float* scratch, int64_t K, IndexRange units) {
  return blocked_panel(scratch + K * 4 * units.begin, K, units.size());
}

void pack_gate_panels(const float* w, int64_t H, IndexRange units, BlockedPanel panels) {
  for (int64_t gate = 0; gate < 4; ++gate) {
    BlockedPanel gate_panel = panels;
    gate_panel.data += gate * panels.K * panels.n;
    pack_transposed(w + (gate * H + units.begin) * panels.K, gate_panel);
  }
}

// gates (rows, 4H) [+]= A (rows, K) W^T for the units `units` of all four gates (w: their four
// gate panels).
void add_to_gates(int64_t rows, const float* A, int64_t lda, const BlockedPanel& w, int64_t H,
                  float* gates, IndexRange units, bool add_C) {
  if (rows == 0) return;
  const int64_t gate_stride = w.K * w.n;
  float* gate_columns = gates + units.begin;
  for (int64_t col = 0; col < w.n; col += w.block_columns) {
    const int64_t cols = w.block_size(col);
    if (rows <= kSmallRows) {
      small_gemm(rows, /*blocks=*/4, gate_stride, H, 0, cols, w.K, A, lda, w.block(col), cols,
                 gate_columns + col, 4 * H, add_C);
      continue;
    }
    for (int64_t gate = 0; gate < 4; ++gate) {
      gemm_block(rows, cols, w.K, lda, cols, 4 * H, add_C, A,
                 w.block(col) + gate * gate_stride, gate_columns + gate * H + col);
    }
  }
}

// gates (rows, 4H) += A (rows, K) W^T for the units `units` of all four gates, rows <=
// kSmallRows, with W (4H, K) as stored (float or bfloat16).
template <typename weight_t>
void add_to_gates_as_stored(int64_t rows, const float* A, int64_t K, const weight_t* w, int64_t H,
                            float* gates, IndexRange units) {
  if (rows == 0) return;
  for (int64_t gate = 0; gate < 4; ++gate) {
    small_gemm_transposed_b(rows, units.size(), K, A, K, w + (gate * H + units.begin) * K, K,
                            gates + gate * H + units.begin, 4 * H, /*add_C=*/true);
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

// One thread of a forward layer. Each step runs as the work items of its hidden units (input
// projection of a new chunk, recurrent GEMM, cell), then with the projection those of its
// projection columns; a barrier follows each phase, as the next one reads every column of it.
void forward_thread(const LayerForwardParams<float>& params, int64_t thread,
                    int64_t projection_row_tile, bool w_hh_as_stored, Team& team) {
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
  const ColumnItems unit_items = team.unit_items;
  const ColumnItems state_items = team.state_items;
  const RowBands bands = team.bands;

  // Each thread packs the panels of its home items (of their first bands); any thread may read
  // them later.
  team.unit_work.for_home_items(thread, [&](int64_t item) {
    if (item % bands.count != 0) return;
    const IndexRange units = unit_items[item / bands.count];
    if (p.w_ih != nullptr) pack_gate_panels(p.w_ih, H, units, gate_panels(p.w_ih_t, I, units));
    if (!w_hh_as_stored) pack_gate_panels(p.w_hh, H, units, gate_panels(p.w_hh_t, R, units));
  });
  if (has_projection) {
    // The projection's columns: W_hr's rows transposed into (H, columns) panels.
    team.state_work.for_home_items(thread, [&](int64_t item) {
      const IndexRange columns = state_items[item];
      pack_transposed(p.w_hr + columns.begin * H, column_panel(p.w_hr_t, H, columns));
    });
  }
  team.barrier.wait();

  // gates (rows, 4H) += h (rows, R) W_hh^T for the units `units`.
  const auto add_recurrent = [&](int64_t rows, const float* h, float* gates, IndexRange units) {
    if (rows <= 0) return;
    if (w_hh_as_stored && p.w_hh_bfloat16 != nullptr) {
      add_to_gates_as_stored(rows, h, R, p.w_hh_bfloat16, H, gates, units);
    } else if (w_hh_as_stored) {
      add_to_gates_as_stored(rows, h, R, p.w_hh, H, gates, units);
    } else {
      add_to_gates(rows, h, R, gate_panels(p.w_hh_t, R, units), H, gates, units,
                   /*add_C=*/true);
    }
  };
  // The input projection, written over the gates (the cell adds the bias), of the band `band`
  // of each step in the chunk that step k projects: the rows that the items of that band read.
  // Initialising the tiles to the bias cost a copy per row and the GEMM a read of C: alternated
  // on a 2-core Xeon, forwards at B=256 H=256 and B=64 H=512 take 0.88-0.95x the time without,
  // B=1 H=128 0.92x, I=512 H=1024 P=256 0.89x.
  const auto project_chunk = [&](int64_t k, int64_t band, IndexRange units) {
    const StepLayout& first = p.steps[k];
    const BlockedPanel w_ih = gate_panels(p.w_ih_t, I, units);
    for (int64_t s = k, done = 0; done < first.project_rows; done += p.steps[s].rows, ++s) {
      const IndexRange band_rows = bands(band, p.steps[s].rows);
      // The chunk's rows are those of its steps, one after the other.
      const int64_t chunk_row = p.steps[s].row - first.project_row + band_rows.begin;
      for (int64_t row = 0; row < band_rows.size(); row += projection_row_tile) {
        const int64_t rows = std::min(projection_row_tile, band_rows.size() - row);
        add_to_gates(rows, p.input + (first.project_row + chunk_row + row) * I, I, w_ih, H,
                     p.gates + (first.project_gate_row + chunk_row + row) * G, units,
                     /*add_C=*/false);
      }
    }
  };

  for (int64_t k = 0; k < p.num_steps; ++k) {
    const StepLayout& step = p.steps[k];
    if (step.rows == 0 && step.project_rows == 0) continue;
    const uint64_t round = static_cast<uint64_t>(k) + 1;
    float* step_gates = p.gates + step.gate_row * G;
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
    // The projection below writes the gates without the bias: the cell adds it.
    cell.bias = p.bias;

    team.unit_work.run(thread, round, [&](int64_t item) {
      const IndexRange units = unit_items[item / bands.count];
      const int64_t band = item % bands.count;
      if (step.project_rows > 0) project_chunk(k, band, units);
      // The band's rows: those carried from the step before, then those starting here.
      const IndexRange rows = bands(band, step.rows);
      const int64_t carried_end = std::min(rows.end, step.carried_rows);
      const int64_t starting_begin = std::max(rows.begin, step.carried_rows);
      add_recurrent(carried_end - rows.begin, p.output + (step.prev_row + rows.begin) * R,
                    step_gates + rows.begin * G, units);
      add_recurrent(rows.end - starting_begin, p.h0 + starting_begin * R,
                    step_gates + starting_begin * G, units);
      forward_block_float(cell, rows.begin, rows.end, units.begin, units.end);
      for (int64_t row = std::max(rows.begin, step.finished_from); row < rows.end; ++row) {
        std::memcpy(p.c_n + row * H + units.begin, cell.cell + row * H + units.begin,
                    units.size() * sizeof(float));
        if (!has_projection) {
          std::memcpy(p.h_n + row * R + units.begin, cell.hidden + row * H + units.begin,
                      units.size() * sizeof(float));
        }
      }
    });

    if (has_projection) {
      // The projection reads every hidden unit of the step.
      team.barrier.wait();
      team.state_work.run(thread, round, [&](int64_t item) {
        const IndexRange columns = state_items[item];
        float* output = p.output + step.row * R + columns.begin;
        multiply_columns(step.rows, cell.hidden, H, column_panel(p.w_hr_t, H, columns), output,
                         R);
        for (int64_t row = step.finished_from; row < step.rows; ++row) {
          std::memcpy(p.h_n + row * R + columns.begin, output + row * R,
                      columns.size() * sizeof(float));
        }
      });
    }
    // The next step's recurrent GEMM reads every column of this step's output.
    team.barrier.wait();
  }
}

// One thread of a backward layer, from the last step processed to the first. Work items of
// hidden units apply the backward cell (after dL/dh_t = dL/d(projected h_t) W_hr for their
// units, with the projection); items of recurrent-state columns then compute their columns of
// dL/dh_{t-1} = dL/dgates W_hh, which every unit of the step before needs. Each such item goes
// on into the step before with the same columns, where nothing else must come first: with the
// projection it sums dL/d(projected h_{t-1}) of its columns, without it applies the cell to its
// units (whose dL/dh_{t-1} it has just computed). One barrier per step then suffices (two with
// the projection).
void backward_thread(const LayerBackwardParams<float>& params, int64_t thread, Team& team) {
  const LayerBackwardParams<float> p = params;  // see forward_thread
  const int64_t H = p.hidden_size;
  const int64_t R = p.recurrent_size;
  const int64_t G = 4 * H;
  const bool has_projection = p.w_hr != nullptr;
  const ColumnItems unit_items = team.unit_items;
  const ColumnItems state_items = team.state_items;

  // The columns of W_hh (and of W_hr) that each item multiplies by, copied into column-blocked
  // panels, each thread those of its home items.
  team.state_work.for_home_items(thread, [&](int64_t item) {
    const IndexRange state = state_items[item];
    pack_columns(p.w_hh, R, state.begin, column_panel(p.w_hh_columns, G, state));
  });
  if (has_projection) {
    team.unit_work.for_home_items(thread, [&](int64_t item) {
      const IndexRange units = unit_items[item];
      pack_columns(p.w_hr, H, units.begin, column_panel(p.w_hr_columns, R, units));
    });
  }
  team.barrier.wait();

  // dL/d(projected h_t) = the output's gradient + the recurrent one, columns `state`.
  const auto sum_projected_gradient = [&](const StepLayout& step, IndexRange state) {
    float* grad_projected = p.grad_projected + step.row * R;
    const float* grad_output = p.grad_output + step.row * R;
    for (int64_t row = 0; row < step.rows; ++row) {
      for (int64_t col = state.begin; col < state.end; ++col) {
        grad_projected[row * R + col] =
            grad_output[row * R + col] + p.grad_hidden_state[row * R + col];
      }
    }
  };
  const auto backward_units = [&](const StepLayout& step, IndexRange units) {
    BackwardStepParams<float> cell;
    if (has_projection) {
      multiply_columns(step.rows, p.grad_projected + step.row * R, R,
                       column_panel(p.w_hr_columns, R, units), p.grad_hidden + units.begin, H);
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
    backward_block_float(cell, 0, step.rows, units.begin, units.end);
  };
  const auto propagate = [&](const StepLayout& step, IndexRange state) {
    multiply_columns(step.rows, p.grad_gates + step.row * G, G,
                     column_panel(p.w_hh_columns, G, state), p.grad_hidden_state + state.begin,
                     R);
  };

  if (p.num_steps == 0) return;
  const int64_t last = p.num_steps - 1;
  uint64_t round = 1;
  if (has_projection) {
    team.state_work.run(thread, round, [&](int64_t item) {
      sum_projected_gradient(p.steps[last], state_items[item]);
    });
  } else {
    team.unit_work.run(thread, round, [&](int64_t item) {
      backward_units(p.steps[last], unit_items[item]);
    });
  }
  for (int64_t k = last; k >= 0; --k) {
    const StepLayout& step = p.steps[k];
    ++round;
    if (has_projection) {
      // dL/dh_t before the projection reads every projected column.
      team.barrier.wait();
      team.unit_work.run(thread, round,
                         [&](int64_t item) { backward_units(step, unit_items[item]); });
    }
    // dL/dh_{t-1} reads every gate column of the step.
    team.barrier.wait();
    team.state_work.run(thread, round, [&](int64_t item) {
      const IndexRange state = state_items[item];
      propagate(step, state);
      if (k == 0) return;
      if (has_projection) {
        sum_projected_gradient(p.steps[k - 1], state);
      } else {
        backward_units(p.steps[k - 1], state);
      }
    });
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

// Bytes of W_hh per thread from which a layer of small steps (at most kSmallRows rows) reads it
// as stored, through dot products (small_gemm_transposed_b), instead of transposing it into
// panels first: the transpose, once per call, costs more than the dot products' lane sums.
// Alternated on a 2-core Xeon, B=1: H=256 0.91x the time, H=512 0.88-0.94x, I=H=1024 T=25 0.65x;
// B=4 H=512 0.79x; but H=128 (256 KB, which stays in L2 either way) 1.12x.
constexpr int64_t kMinStoredRecurrentBytes = int64_t(512) << 10;

bool reads_w_hh_as_stored(int64_t max_rows, int64_t H, int64_t R, int64_t threads) {
  return max_rows <= kSmallRows &&
         4 * H * R * static_cast<int64_t>(sizeof(float)) / threads >= kMinStoredRecurrentBytes;
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
  const int64_t R = p.recurrent_size;
  const int64_t max_rows = max_step_rows(p.steps, p.num_steps);
  const int64_t threads = layer_threads(max_rows, H, R);
  const int64_t projection_row_tile = streams_input_weights(p.input_size, H)
                                          ? kStreamingProjectionRowTile
                                          : kProjectionRowTile;
  Team team;
#pragma omp parallel num_threads(static_cast<int>(threads))
  {
    const bool w_hh_as_stored = reads_w_hh_as_stored(max_rows, H, R, omp_get_num_threads());
#pragma omp single
    team.set_up(omp_get_num_threads(), H, R, row_bands(max_rows));
    forward_thread(p, omp_get_thread_num(), projection_row_tile, w_hh_as_stored, team);
    at::native::cpublas::brgemm_release(/*is_vnni=*/false);
  }
}

void layer_backward_float(const LayerBackwardParams<float>& p) {
  const int64_t H = p.hidden_size;
  const int64_t R = p.recurrent_size;
  const int64_t threads = layer_threads(max_step_rows(p.steps, p.num_steps), H, R);
  Team team;
#pragma omp parallel num_threads(static_cast<int>(threads))
  {
#pragma omp single
    team.set_up(omp_get_num_threads(), H, R);
    backward_thread(p, omp_get_thread_num(), team);
    at::native::cpublas::brgemm_release(/*is_vnni=*/false);
  }
}

}  // namespace cpu
}  // namespace lstm_ext

#endif

// The float32 forward layer on the CPU: the step loop in one parallel region.
//
// The work of a step is split into items of hidden units (in a step of many rows, of a band of
// its rows; see RowBands) and, with the projection, items of its output columns, which the
// threads claim (see StepItems). An item of hidden units projects the input into the four gate
// columns of its units (a chunk of steps at a time), adds h_{t-1} W_hh^T into them and applies
// the cell; an item of output columns multiplies the step's hidden units by its columns of
// W_hr^T. Only a GEMM that reads a whole row of the phase before needs the other items' columns,
// hence one barrier per step (two with the projection). A barrier between threads that stay in
// the region costs far less than starting a parallel region per step.
#include "cpu/layer_kernels.h"

#if LSTM_EXT_HAS_CPU_LAYER_KERNELS
#include <omp.h>

#include <algorithm>
#include <cstring>

#include "core/step_layout.h"
#include "cpu/isa.h"
#include "cpu/panels.h"
#include "cpu/policy.h"
#include "cpu/work_sharing.h"

namespace lstm_ext {
namespace cpu {
namespace {

// Which recurrent weights the kernel reads as stored (see reads_as_stored), not as panels.
struct AsStored {
  bool w_hh;
  bool w_hr;
};

// One thread of a forward layer.
class ForwardThread {
 public:
  // Reads the params through a copy on this thread's own stack: the caller's struct lies on the
  // main thread's stack, and its fields, reloaded between stores to the buffers, stall whenever
  // it shares its offset within 4 KB with them (4K aliasing).
  ForwardThread(const LayerForwardParams<float>& params, int64_t thread, AsStored as_stored,
                Team& team)
      : p_(params),
        thread_(thread),
        w_hh_as_stored_(as_stored.w_hh),
        w_hr_as_stored_(as_stored.w_hr),
        projection_row_tile_(projection_row_tile(params.input_size, params.hidden_size)),
        forward_cell_(microkernels().forward_cell),
        team_(team) {}

  // Each thread packs the panels of its home items (of their first bands); any thread may read
  // them after the barrier that must follow.
  void pack_panels() {
    const int64_t H = p_.hidden_size;
    const RowBands bands = team_.bands;
    team_.unit_work.for_home_items(thread_, [&](int64_t item) {
      if (item % bands.count != 0) return;
      const IndexRange units = team_.unit_items[item / bands.count];
      if (p_.w_ih != nullptr) {
        pack_gate_panels(p_.w_ih, H, units, gate_panels(p_.w_ih_t, p_.input_size, units));
      }
      if (!w_hh_as_stored_) {
        pack_gate_panels(p_.w_hh, H, units, gate_panels(p_.w_hh_t, p_.recurrent_size, units));
      }
    });
    if (p_.w_hr == nullptr || w_hr_as_stored_) return;
    // The projection's columns: W_hr's rows transposed into (H, columns) panels.
    team_.state_work.for_home_items(thread_, [&](int64_t item) {
      const IndexRange columns = team_.state_items[item];
      pack_transposed(p_.w_hr + columns.begin * H, column_panel(p_.w_hr_t, H, columns));
    });
  }

  void run_steps() {
    for (int64_t k = 0; k < p_.num_steps; ++k) {
      const StepLayout& step = p_.steps[k];
      if (step.rows == 0 && step.project_steps == 0) continue;
      const uint64_t round = static_cast<uint64_t>(k) + 1;
      const bool reversed = team_.reverses_on(k);
      team_.unit_work.run(thread_, round, reversed,
                          [&](int64_t item) { unit_item(k, item, reversed); });
      if (p_.w_hr != nullptr) {
        // The projection reads every hidden unit of the step.
        team_.barrier.wait();
        team_.state_work.run(thread_, round, reversed,
                             [&](int64_t item) { projection_item(step, item); });
      }
      // The next step's recurrent GEMM reads every column of this step's output.
      team_.barrier.wait();
    }
  }

 private:
  // gates (rows, 4H) += h (rows, R) W_hh^T for the units `units`.
  void add_recurrent(int64_t rows, const float* h, float* gates, IndexRange units,
                     bool reversed) const {
    const int64_t H = p_.hidden_size;
    const int64_t R = p_.recurrent_size;
    if (rows <= 0) return;
    if (w_hh_as_stored_ && p_.w_hh_bfloat16 != nullptr) {
      add_to_gates_as_stored(rows, h, R, p_.w_hh_bfloat16, H, gates, units, reversed);
    } else if (w_hh_as_stored_) {
      add_to_gates_as_stored(rows, h, R, p_.w_hh, H, gates, units, reversed);
    } else {
      add_to_gates(rows, h, R, gate_panels(p_.w_hh_t, R, units), H, gates, units,
                   /*add_C=*/true, reversed);
    }
  }

  // The input projection of the chunk that step k starts, written over the gates without the
  // bias (the cell adds it: initialising the tiles to the bias costs a copy per row and the GEMM
  // a read of C), for the band `band` of each of its steps: the rows that this band's items read.
  void project_chunk(int64_t k, int64_t band, IndexRange units) const {
    const int64_t I = p_.input_size;
    const BlockedPanel w_ih = gate_panels(p_.w_ih_t, I, units);
    for (int64_t s = k; s < k + p_.steps[k].project_steps; ++s) {
      const StepLayout& step = p_.steps[s];
      const IndexRange band_rows = team_.bands(band, step.rows);
      for (int64_t row = band_rows.begin; row < band_rows.end; row += projection_row_tile_) {
        const int64_t rows = std::min(projection_row_tile_, band_rows.end - row);
        add_to_gates(rows, p_.input + (step.row + row) * I, I, w_ih, p_.hidden_size,
                     p_.gates + (step.gate_row + row) * 4 * p_.hidden_size, units,
                     /*add_C=*/false, /*reversed=*/false);
      }
    }
  }

  // An item of hidden units of step k: its chunk's projection, the recurrent GEMM and the cell
  // over its band of rows (those carried from the step before, then those starting here).
  void unit_item(int64_t k, int64_t item, bool reversed) const {
    const StepLayout& step = p_.steps[k];
    const int64_t H = p_.hidden_size;
    const int64_t R = p_.recurrent_size;
    const IndexRange units = team_.unit_items[item / team_.bands.count];
    const int64_t band = item % team_.bands.count;
    if (step.project_steps > 0) project_chunk(k, band, units);
    const ForwardStepParams<float> cell =
        forward_step_params(step, H, p_.gates, p_.cells, p_.hidden, p_.c0, p_.bias);
    const IndexRange rows = team_.bands(band, step.rows);
    const int64_t carried_end = std::min(rows.end, step.carried_rows);
    const int64_t starting_begin = std::max(rows.begin, step.carried_rows);
    add_recurrent(carried_end - rows.begin, p_.output + (step.prev_row + rows.begin) * R,
                  cell.gates + rows.begin * 4 * H, units, reversed);
    add_recurrent(rows.end - starting_begin, p_.h0 + starting_begin * R,
                  cell.gates + starting_begin * 4 * H, units, reversed);
    forward_cell_(cell, rows.begin, rows.end, units.begin, units.end);
    for (int64_t row = std::max(rows.begin, step.finished_from); row < rows.end; ++row) {
      std::memcpy(p_.c_n + row * H + units.begin, cell.cell + row * H + units.begin,
                  units.size() * sizeof(float));
      if (p_.w_hr == nullptr) {
        std::memcpy(p_.h_n + row * R + units.begin, cell.hidden + row * H + units.begin,
                    units.size() * sizeof(float));
      }
    }
  }

  // An item of output columns: the step's hidden units times its columns of W_hr^T.
  void projection_item(const StepLayout& step, int64_t item) const {
    const int64_t H = p_.hidden_size;
    const int64_t R = p_.recurrent_size;
    const IndexRange columns = team_.state_items[item];
    float* output = p_.output + step.row * R + columns.begin;
    const float* hidden = p_.hidden + step.hidden_row * H;
    if (w_hr_as_stored_) {
      multiply_as_stored(step.rows, hidden, H, p_.w_hr + columns.begin * H, H, columns.size(),
                         output, R);
    } else {
      multiply_columns(step.rows, hidden, H, column_panel(p_.w_hr_t, H, columns), output, R);
    }
    for (int64_t row = step.finished_from; row < step.rows; ++row) {
      std::memcpy(p_.h_n + row * R + columns.begin, output + row * R,
                  columns.size() * sizeof(float));
    }
  }

  const LayerForwardParams<float> p_;
  const int64_t thread_;
  const bool w_hh_as_stored_;
  const bool w_hr_as_stored_;
  const int64_t projection_row_tile_;
  decltype(Microkernels::forward_cell) const forward_cell_;
  Team& team_;
};

// A thread's share of the batch rows, run alone: the rows of one sequence depend on no other,
// so it needs no barrier and reads no other thread's results (see splits_batch).
void run_batch_share(const LayerForwardParams<float>& p, int64_t thread, int64_t threads,
                     AsStored as_stored, const Team& shared) {
  const auto [begin, end] = batch_share(p.steps, p.num_steps, threads, thread);
  const std::vector<StepLayout> steps = batch_rows_of(p.steps, p.num_steps, begin, end);
  LayerForwardParams<float> own = p;
  own.steps = steps.data();
  own.h0 += begin * p.recurrent_size;
  own.c0 += begin * p.hidden_size;
  own.h_n += begin * p.recurrent_size;
  own.c_n += begin * p.hidden_size;
  Team alone;
  alone.set_up_alone(shared);
  ForwardThread(own, 0, as_stored, alone).run_steps();
}

}  // namespace

// The team may be smaller than asked (inside another parallel region it is one thread): the
// work is split over the threads that actually run.
void layer_forward_float(const LayerForwardParams<float>& p) {
  microkernels();  // chosen here, where an error can still reach the caller
  const int64_t H = p.hidden_size;
  const int64_t R = p.recurrent_size;
  const int64_t max_rows = max_step_rows(p.steps, p.num_steps);
  const int64_t steps = p.num_steps;
  const AsStored as_stored = {
      reads_as_stored(max_rows, steps, R, 4 * H * R * int64_t(sizeof(float))),
      reads_as_stored(max_rows, steps, H, R * H * int64_t(sizeof(float)))};
  const int64_t weight_bytes = recurrent_weight_bytes(H, R, p.w_hr);
  Team team;
#pragma omp parallel num_threads(static_cast<int>(layer_threads(max_rows, H, R)))
  {
    const int64_t threads = omp_get_num_threads();
    const int64_t thread = omp_get_thread_num();
    const bool split = splits_batch(max_rows, threads, weight_bytes);
#pragma omp single
    team.set_up(threads, H, R, !split && reverses_traversal(max_rows, weight_bytes, threads),
                split ? RowBands() : row_bands(max_rows));
    ForwardThread shared(p, thread, as_stored, team);
    shared.pack_panels();
    team.barrier.wait();
    if (split) {
      run_batch_share(p, thread, threads, as_stored, team);
    } else {
      shared.run_steps();
    }
    at::native::cpublas::brgemm_release(/*is_vnni=*/false);
  }
}

}  // namespace cpu
}  // namespace lstm_ext

#endif

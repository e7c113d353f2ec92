// The float32 backward layer's step loop on the CPU, in one parallel region, from the last step
// processed to the first.
//
// Work items of hidden units apply the backward cell (after dL/dh_t = dL/d(projected h_t) W_hr
// for their units, with the projection); items of recurrent-state columns then compute their
// columns of dL/dh_{t-1} = dL/dgates W_hh, which every unit of the step before needs. Each such
// item goes on into the step before with the same columns, where nothing else must come first:
// with the projection it sums dL/d(projected h_{t-1}) of its columns, without it applies the cell
// to its units (whose dL/dh_{t-1} it has just computed). One barrier per step then suffices (two
// with the projection). The weight gradients are GEMMs over all rows after the loop (the
// driver's).
#include "cpu/layer_kernels.h"

#if LSTM_EXT_HAS_CPU_LAYER_KERNELS
#include <omp.h>

#include <vector>

#include "core/step_layout.h"
#include "cpu/isa.h"
#include "cpu/panels.h"
#include "cpu/policy.h"
#include "cpu/work_sharing.h"

namespace lstm_ext {
namespace cpu {
namespace {

// One thread of a backward layer.
class BackwardThread {
 public:
  // Reads the params through a copy on this thread's stack (see ForwardThread).
  BackwardThread(const LayerBackwardParams<float>& params, int64_t thread, Team& team)
      : p_(params), thread_(thread), backward_cell_(microkernels().backward_cell), team_(team) {}

  // The columns of W_hh (and of W_hr) that each item multiplies by, copied into column-blocked
  // panels, each thread those of its home items; any thread may read them after the barrier that
  // must follow.
  void pack_panels() {
    const int64_t H = p_.hidden_size;
    const int64_t R = p_.recurrent_size;
    team_.state_work.for_home_items(thread_, [&](int64_t item) {
      const IndexRange state = team_.state_items[item];
      pack_columns(p_.w_hh, R, state.begin, column_panel(p_.w_hh_columns, 4 * H, state));
    });
    if (p_.w_hr == nullptr) return;
    team_.unit_work.for_home_items(thread_, [&](int64_t item) {
      const IndexRange units = team_.unit_items[item];
      pack_columns(p_.w_hr, H, units.begin, column_panel(p_.w_hr_columns, R, units));
    });
  }

  void run_steps() {
    if (p_.num_steps == 0) return;
    const bool has_projection = p_.w_hr != nullptr;
    const int64_t last = p_.num_steps - 1;
    uint64_t round = 1;
    if (has_projection) {
      team_.state_work.run(thread_, round, /*reversed=*/false, [&](int64_t item) {
        sum_projected_gradient(p_.steps[last], team_.state_items[item]);
      });
    } else {
      team_.unit_work.run(thread_, round, /*reversed=*/false, [&](int64_t item) {
        backward_units(p_.steps[last], team_.unit_items[item]);
      });
    }
    for (int64_t k = last; k >= 0; --k) {
      ++round;
      const bool reversed = team_.reverses_on(k);
      if (has_projection) {
        // dL/dh_t before the projection reads every projected column.
        team_.barrier.wait();
        team_.unit_work.run(thread_, round, reversed, [&](int64_t item) {
          backward_units(p_.steps[k], team_.unit_items[item]);
        });
      }
      // dL/dh_{t-1} reads every gate column of the step.
      team_.barrier.wait();
      team_.state_work.run(thread_, round, reversed, [&](int64_t item) { state_item(k, item); });
    }
  }

 private:
  // dL/d(projected h_t) = the output's gradient + the recurrent one, columns `state`.
  void sum_projected_gradient(const StepLayout& step, IndexRange state) const {
    const int64_t R = p_.recurrent_size;
    float* grad_projected = p_.grad_projected + step.row * R;
    const float* grad_output = p_.grad_output + step.row * R;
    for (int64_t row = 0; row < step.rows; ++row) {
      for (int64_t col = state.begin; col < state.end; ++col) {
        grad_projected[row * R + col] =
            grad_output[row * R + col] + p_.grad_hidden_state[row * R + col];
      }
    }
  }

  // The backward cell of `units` (after their dL/dh_t through the projection, if any).
  void backward_units(const StepLayout& step, IndexRange units) const {
    const int64_t H = p_.hidden_size;
    const int64_t R = p_.recurrent_size;
    const bool has_projection = p_.w_hr != nullptr;
    if (has_projection) {
      multiply_columns(step.rows, p_.grad_projected + step.row * R, R,
                       column_panel(p_.w_hr_columns, R, units), p_.grad_hidden + units.begin, H);
    }
    const BackwardStepParams<float> cell = backward_step_params<float>(
        step, H, p_.gates, p_.cells, p_.c0,
        has_projection ? p_.grad_hidden : p_.grad_output + step.row * R, has_projection ? H : R,
        has_projection ? nullptr : p_.grad_hidden_state, p_.grad_cell_state, p_.grad_gates);
    backward_cell_(cell, 0, step.rows, units.begin, units.end);
  }

  // An item of recurrent-state columns of step k: their dL/dh_{t-1}, then the same columns'
  // first phase of the step before.
  void state_item(int64_t k, int64_t item) const {
    const StepLayout& step = p_.steps[k];
    const int64_t G = 4 * p_.hidden_size;
    const IndexRange state = team_.state_items[item];
    multiply_columns(step.rows, p_.grad_gates + step.gate_row * G, G,
                     column_panel(p_.w_hh_columns, G, state), p_.grad_hidden_state + state.begin,
                     p_.recurrent_size);
    if (k == 0) return;
    if (p_.w_hr != nullptr) {
      sum_projected_gradient(p_.steps[k - 1], state);
    } else {
      backward_units(p_.steps[k - 1], state);
    }
  }

  const LayerBackwardParams<float> p_;
  const int64_t thread_;
  decltype(Microkernels::backward_cell) const backward_cell_;
  Team& team_;
};

// A thread's share of the batch rows, run alone (see run_batch_share in layer_forward.cpp).
void run_batch_share(const LayerBackwardParams<float>& p, int64_t thread, int64_t threads,
                     const Team& shared) {
  const auto [begin, end] = batch_share(p.steps, p.num_steps, threads, thread);
  const std::vector<StepLayout> steps = batch_rows_of(p.steps, p.num_steps, begin, end);
  LayerBackwardParams<float> own = p;
  own.steps = steps.data();
  own.c0 += begin * p.hidden_size;
  own.grad_hidden_state += begin * p.recurrent_size;
  own.grad_cell_state += begin * p.hidden_size;
  if (own.grad_hidden != nullptr) own.grad_hidden += begin * p.hidden_size;
  Team alone;
  alone.set_up_alone(shared);
  BackwardThread(own, 0, alone).run_steps();
}

}  // namespace

void layer_backward_float(const LayerBackwardParams<float>& p) {
  microkernels();  // chosen here, where an error can still reach the caller
  const int64_t H = p.hidden_size;
  const int64_t R = p.recurrent_size;
  const int64_t max_rows = max_step_rows(p.steps, p.num_steps);
  const int64_t weight_bytes = recurrent_weight_bytes(H, R, p.w_hr);
  Team team;
#pragma omp parallel num_threads(static_cast<int>(layer_threads(max_rows, H, R)))
  {
    const int64_t threads = omp_get_num_threads();
    const int64_t thread = omp_get_thread_num();
    const bool split = splits_batch(max_rows, threads, weight_bytes);
#pragma omp single
    team.set_up(threads, H, R, !split && reverses_traversal(max_rows, weight_bytes, threads));
    BackwardThread shared(p, thread, team);
    shared.pack_panels();
    team.barrier.wait();
    if (split) {
      run_batch_share(p, thread, threads, team);
    } else {
      shared.run_steps();
    }
    at::native::cpublas::brgemm_release(/*is_vnni=*/false);
  }
}

}  // namespace cpu
}  // namespace lstm_ext

#endif

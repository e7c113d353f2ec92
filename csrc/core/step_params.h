// The step kernels' params of one step of a layer, from where the step reads and writes: a
// StepLayout (lstm_layer.h) or any struct with its row fields (the persistent CUDA kernel's
// 32-bit copy of it). Torch-free, so that CUDA kernels build them on the device.
#pragma once

#include <cstdint>

#include "core/lstm_math.h"

namespace lstm_ext {

// The pointwise pass of `step` over buffers laid out as `step` says: gates (., 4H), cells and
// hidden (., H) from their first rows, c0 (B, H); bias (4H) or nullptr (see
// ForwardStepParams::bias).
template <typename scalar_t, typename Step>
LSTM_HOST_DEVICE ForwardStepParams<scalar_t>
forward_step_params(const Step& step, int64_t H, scalar_t* gates, scalar_t* cells, scalar_t* hidden,
                    const scalar_t* c0, const scalar_t* bias) {
  ForwardStepParams<scalar_t> params;
  // 4 * H first: 64-bit products even for a Step of 32-bit rows.
  params.gates = gates + step.gate_row * (4 * H);
  params.prev_cell = cells + step.prev_cell_row * H;
  params.initial_cell = c0;
  params.cell = cells + step.cell_row * H;
  params.hidden = hidden + step.hidden_row * H;
  params.rows = step.rows;
  params.hidden_size = H;
  params.hidden_stride = H;
  params.carried_rows = step.carried_rows;
  params.bias = bias;
  return params;
}

// The backward pass of `step` over the saved gates (N, 4H) and cells (N, H), c0 (B, H), writing
// grad_gates (N, 4H) and updating grad_cell (B, H). dL/dh_t of the step's rows is grad_hidden
// (row stride grad_hidden_stride) plus grad_hidden_recurrent (B, H) when that is not nullptr.
template <typename scalar_t, typename Step>
LSTM_HOST_DEVICE BackwardStepParams<scalar_t> backward_step_params(
    const Step& step, int64_t H, const scalar_t* gates, const scalar_t* cells, const scalar_t* c0,
    const scalar_t* grad_hidden, int64_t grad_hidden_stride, const scalar_t* grad_hidden_recurrent,
    scalar_t* grad_cell, scalar_t* grad_gates) {
  BackwardStepParams<scalar_t> params;
  params.gates = gates + step.gate_row * (4 * H);
  params.cell = cells + step.cell_row * H;
  params.prev_cell = cells + step.prev_cell_row * H;
  params.initial_cell = c0;
  params.grad_hidden = grad_hidden;
  params.grad_hidden_recurrent = grad_hidden_recurrent;
  params.grad_cell = grad_cell;
  params.grad_gates = grad_gates + step.gate_row * (4 * H);
  params.rows = step.rows;
  params.hidden_size = H;
  params.grad_hidden_stride = grad_hidden_stride;
  params.carried_rows = step.carried_rows;
  return params;
}

}  // namespace lstm_ext

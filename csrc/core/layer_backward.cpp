// The backward half of the layer driver (lstm_layer.h): the step loop in reverse (the backend's
// float32 layer kernel, or ATen and the backend's step kernels one step at a time), then the
// input, weight and bias gradients as one GEMM or reduction each over all rows.
#include <ATen/ops/add.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/sum.h>

#include <cstdint>
#include <vector>

#include "core/lstm_checks.h"
#include "core/lstm_layer.h"
#include "core/step_kernel_choice.h"
#include "core/step_layout.h"
#include "core/widening.h"

namespace lstm_ext {
namespace {

// The checked, contiguous arguments of one backward layer.
struct BackwardArgs {
  const LayerSizes& sizes;
  at::Tensor grad_output;    // (N, R)
  at::Tensor input;          // (N, I)
  at::Tensor h0;             // (B, R)
  at::Tensor c0;             // (B, H)
  at::Tensor w_ih;           // (4H, I)
  at::Tensor w_hh;           // (4H, R)
  at::Tensor w_hr;           // (P, H), or undefined
  const at::Tensor& output;  // (N, R) the forward's
  at::Tensor gates;          // (N, 4H) saved activations
  at::Tensor cells;          // (N, H)
  const at::Tensor& hidden;  // (N, H) pre-projection h_t with w_hr, else empty
};

// What the step loop computes and updates. Gradients flowing back into each row's previous
// state start as those of the final states and end as those of the initial states (a row's
// first processed step in reverse order is its last step, which no later step has touched).
struct BackwardBuffers {
  at::Tensor grad_gates;         // (N, 4H)
  at::Tensor grad_projected;     // (N, P): dL/d(projected h_t), or undefined
  at::Tensor grad_hidden_step;   // (B, H): dL/dh_t before the projection, or undefined
  at::Tensor grad_hidden_state;  // (B, R)
  at::Tensor grad_cell_state;    // (B, H)
};

void run_float_layer(const BackwardArgs& args, const std::vector<StepLayout>& steps,
                     const BackwardBuffers& out, const Backend& backend) {
  const LayerSizes& sizes = args.sizes;
  const int64_t H = sizes.hidden_size;
  const int64_t R = sizes.recurrent_size;
  const auto options = args.input.options();
  const at::Tensor w_hh_columns = backend.empty({4 * H, R}, options);
  const at::Tensor w_hr_columns =
      sizes.has_projection ? backend.empty({R, H}, options) : at::Tensor();
  const auto pointer = [](const at::Tensor& tensor) {
    return tensor.defined() ? tensor.data_ptr<float>() : nullptr;
  };
  LayerBackwardParams<float> params;
  params.steps = steps.data();
  params.num_steps = static_cast<int64_t>(steps.size());
  params.grad_output = pointer(args.grad_output);
  params.gates = pointer(args.gates);
  params.cells = pointer(args.cells);
  params.c0 = pointer(args.c0);
  params.w_hh = pointer(args.w_hh);
  params.w_hr = pointer(args.w_hr);
  params.grad_gates = pointer(out.grad_gates);
  params.grad_projected = pointer(out.grad_projected);
  params.grad_hidden = pointer(out.grad_hidden_step);
  params.grad_hidden_state = pointer(out.grad_hidden_state);
  params.grad_cell_state = pointer(out.grad_cell_state);
  params.w_hh_columns = pointer(w_hh_columns);
  params.w_hr_columns = pointer(w_hr_columns);
  params.hidden_size = H;
  params.recurrent_size = R;
  backend.float_layer->backward(params);
}

// One step through ATen: dL/dh_t (through the projection), the step kernel, then dL/dh_{t-1}.
template <typename scalar_t>
void run_aten_step(const BackwardArgs& args, const StepLayout& step, const BackwardBuffers& out,
                   void (*step_kernel)(const BackwardStepParams<scalar_t>&)) {
  const int64_t H = args.sizes.hidden_size;
  const int64_t R = args.sizes.recurrent_size;
  const scalar_t* grad_hidden = args.grad_output.const_data_ptr<scalar_t>() + step.row * R;
  int64_t grad_hidden_stride = R;
  const scalar_t* grad_hidden_recurrent = out.grad_hidden_state.const_data_ptr<scalar_t>();
  if (args.sizes.has_projection) {
    at::Tensor grad_projected = out.grad_projected.narrow(0, step.row, step.rows);
    at::add_out(grad_projected, args.grad_output.narrow(0, step.row, step.rows),
                out.grad_hidden_state.narrow(0, 0, step.rows));
    at::Tensor grad_hidden_rows = out.grad_hidden_step.narrow(0, 0, step.rows);
    at::mm_out(grad_hidden_rows, grad_projected, args.w_hr);
    grad_hidden = out.grad_hidden_step.const_data_ptr<scalar_t>();
    grad_hidden_stride = H;
    grad_hidden_recurrent = nullptr;
  }
  step_kernel(backward_step_params<scalar_t>(
      step, H, args.gates.const_data_ptr<scalar_t>(), args.cells.const_data_ptr<scalar_t>(),
      args.c0.const_data_ptr<scalar_t>(), grad_hidden, grad_hidden_stride, grad_hidden_recurrent,
      out.grad_cell_state.data_ptr<scalar_t>(), out.grad_gates.data_ptr<scalar_t>()));
  at::Tensor grad_hidden_state_rows = out.grad_hidden_state.narrow(0, 0, step.rows);
  at::mm_out(grad_hidden_state_rows, out.grad_gates.narrow(0, step.gate_row, step.rows), args.w_hh);
}

void run_aten_steps(const BackwardArgs& args, const std::vector<StepLayout>& steps,
                    const BackwardBuffers& out, const Backend& backend) {
  with_step_kernel</*kForward=*/false>(
      "lstm_ext.lstm_layer_backward", args.input, backend.steps, [&](auto step_kernel) {
        for (auto step = steps.rbegin(); step != steps.rend(); ++step) {
          if (step->rows > 0) run_aten_step(args, *step, out, step_kernel);
        }
      });
}

// The GemmParams of C = A B, or with transpose_a C = A^T B; A, B and C contiguous float32.
GemmParams product(const at::Tensor& A, bool transpose_a, const at::Tensor& B,
                   const at::Tensor& C) {
  GemmParams params;
  params.M = A.size(transpose_a ? 1 : 0);
  params.N = B.size(1);
  params.K = A.size(transpose_a ? 0 : 1);
  params.A = A.const_data_ptr<float>();
  params.lda = A.size(1);
  params.transpose_a = transpose_a;
  params.B = B.const_data_ptr<float>();
  params.ldb = B.size(1);
  params.C = C.data_ptr<float>();
  params.ldc = C.size(1);
  return params;
}

// h_{t-1} of every row into previous_hidden (N, R; any strides), for dW_hh as one GEMM: carried
// rows come from the output of the step processed before, the others from h0. Consecutive row
// ranges that continue each other in source and destination are copied together (a padded
// batch needs two copies in all).
void gather_previous_hidden(const std::vector<StepLayout>& steps, const at::Tensor& output,
                            const at::Tensor& h0, const at::Tensor& previous_hidden) {
  struct RowCopy {
    const at::Tensor* source;
    int64_t source_row, target_row, rows;
  };
  std::vector<RowCopy> copies;
  const auto add_copy = [&](const at::Tensor* source, int64_t source_row, int64_t target_row,
                            int64_t rows) {
    if (rows == 0) return;
    if (!copies.empty()) {
      RowCopy& last = copies.back();
      if (last.source == source && last.source_row + last.rows == source_row &&
          last.target_row + last.rows == target_row) {
        last.rows += rows;
        return;
      }
    }
    copies.push_back({source, source_row, target_row, rows});
  };
  for (const StepLayout& step : steps) {
    add_copy(&output, step.prev_row, step.row, step.carried_rows);
    add_copy(&h0, step.carried_rows, step.row + step.carried_rows, step.rows - step.carried_rows);
  }
  for (const RowCopy& copy : copies) {
    previous_hidden.narrow(0, copy.target_row, copy.rows)
        .copy_(copy.source->narrow(0, copy.source_row, copy.rows));
  }
}

// (grad_w_ih, grad_w_hh, grad_bias, grad_w_hr): dW_ih = dG^T x, dW_hh = dG^T h_{t-1}, db = the
// column sums of dG (N, 4H), dW_hr = dL/d(projected h)^T h; through the backend's GEMM (the
// first three in one pass over dG) or ATen's (backend_gemm null).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>
weight_gradients(const BackwardArgs& args, const std::vector<StepLayout>& steps,
                 const BackwardBuffers& out, GemmFloat backend_gemm, const Backend& backend) {
  const LayerSizes& sizes = args.sizes;
  const int64_t H = sizes.hidden_size;
  const int64_t R = sizes.recurrent_size;
  const auto options = args.input.options();
  const at::Tensor previous_hidden = backend.empty({sizes.rows, R}, options);
  gather_previous_hidden(steps, args.output, args.h0, previous_hidden);
  if (backend_gemm == nullptr) {
    const at::Tensor grad_gates_t = out.grad_gates.t();
    return {at::mm(grad_gates_t, args.input), at::mm(grad_gates_t, previous_hidden),
            out.grad_gates.sum(0),
            sizes.has_projection ? at::mm(out.grad_projected.t(), args.hidden)
                                 : at::empty({0}, options)};
  }
  at::Tensor grad_w_ih = at::empty({4 * H, sizes.input_size}, options);
  at::Tensor grad_w_hh = at::empty({4 * H, R}, options);
  at::Tensor grad_bias = at::empty({4 * H}, options);
  GemmParams weights = product(out.grad_gates, /*transpose_a=*/true, args.input, grad_w_ih);
  weights.N2 = R;
  weights.B2 = previous_hidden.const_data_ptr<float>();
  weights.ldb2 = R;
  weights.C2 = grad_w_hh.data_ptr<float>();
  weights.ldc2 = R;
  weights.a_column_sums = grad_bias.data_ptr<float>();
  backend_gemm(weights);
  at::Tensor grad_w_hr = at::empty({0}, options);
  if (sizes.has_projection) {
    grad_w_hr = at::empty({R, H}, options);
    backend_gemm(
        product(out.grad_projected, /*transpose_a=*/true, args.hidden.contiguous(), grad_w_hr));
  }
  return {grad_w_ih, grad_w_hh, grad_bias, grad_w_hr};
}

BackwardBuffers allocate_backward(const BackwardArgs& args, const at::Tensor& grad_h_n,
                                  const at::Tensor& grad_c_n, const Backend& backend) {
  const LayerSizes& sizes = args.sizes;
  const auto options = args.input.options();
  BackwardBuffers out;
  out.grad_gates = backend.empty({sizes.rows, 4 * sizes.hidden_size}, options);
  if (sizes.has_projection) {
    out.grad_projected = backend.empty({sizes.rows, sizes.recurrent_size}, options);
    out.grad_hidden_step = at::empty({sizes.batch, sizes.hidden_size}, options);
  }
  out.grad_hidden_state = grad_h_n.contiguous().clone();
  out.grad_cell_state = grad_c_n.contiguous().clone();
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
backward_layer(const BackwardArgs& args, const at::Tensor& grad_h_n, const at::Tensor& grad_c_n,
               bool reverse, bool grad_input_mask, bool grad_weights_mask, const Backend& backend) {
  const LayerSizes& sizes = args.sizes;
  const bool is_float = args.input.scalar_type() == at::kFloat;
  const std::vector<StepLayout> steps = plan_steps(sizes.batch_sizes, reverse);
  const BackwardBuffers out = allocate_backward(args, grad_h_n, grad_c_n, backend);
  if (backend.float_layer != nullptr && backend.float_layer->backward != nullptr && is_float) {
    run_float_layer(args, steps, out, backend);
  } else {
    run_aten_steps(args, steps, out, backend);
  }
  // The input's gradient is a third of the work after the loop, and a first layer's input
  // seldom needs it.
  const GemmFloat backend_gemm =
      backend.policy != nullptr && is_float
          ? backend.policy->gemm_float(sizes.rows * 4 * sizes.hidden_size *
                                       (sizes.input_size + sizes.recurrent_size))
          : nullptr;
  const auto empty = [&] { return at::empty({0}, args.input.options()); };
  at::Tensor grad_input = empty();
  if (grad_input_mask && backend_gemm != nullptr) {
    grad_input = backend.empty({sizes.rows, sizes.input_size}, args.input.options());
    backend_gemm(product(out.grad_gates, /*transpose_a=*/false, args.w_ih, grad_input));
  } else if (grad_input_mask) {
    grad_input = at::mm(out.grad_gates, args.w_ih);
  }
  if (!grad_weights_mask) {
    return {grad_input, out.grad_hidden_state, out.grad_cell_state, empty(), empty(), empty(),
            empty()};
  }
  const auto [grad_w_ih, grad_w_hh, grad_bias, grad_w_hr] =
      weight_gradients(args, steps, out, backend_gemm, backend);
  return {grad_input, out.grad_hidden_state, out.grad_cell_state, grad_w_ih, grad_w_hh, grad_bias,
          grad_w_hr};
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
lstm_layer_backward(const at::Tensor& grad_output, const at::Tensor& grad_h_n,
                    const at::Tensor& grad_c_n, const at::Tensor& input,
                    const at::Tensor& batch_sizes, const at::Tensor& h0, const at::Tensor& c0,
                    const at::Tensor& w_ih, const at::Tensor& w_hh,
                    const std::optional<at::Tensor>& w_hr, const at::Tensor& output,
                    const at::Tensor& gates, const at::Tensor& cells, const at::Tensor& hidden,
                    bool reverse, bool grad_input_mask, bool grad_weights_mask,
                    const Backend& backend) {
  const char* op = "lstm_ext.lstm_layer_backward";
  const LayerSizes sizes = check_forward_args(op, input, batch_sizes, h0, c0, w_ih, w_hh,
                                              std::nullopt, std::nullopt, w_hr);
  check_backward_args(op, sizes, input, grad_output, grad_h_n, grad_c_n, output, gates, cells,
                      hidden);
  if (widens_to_float(input, backend)) {
    const auto wide = [&](const at::Tensor& tensor) { return widened(tensor, backend); };
    const auto grads = lstm_layer_backward(
        wide(grad_output), wide(grad_h_n), wide(grad_c_n), wide(input), batch_sizes, wide(h0),
        wide(c0), wide(w_ih), wide(w_hh), widened(w_hr, backend), wide(output), wide(gates),
        wide(cells), wide(hidden), reverse, grad_input_mask, grad_weights_mask, backend);
    const at::ScalarType dtype = input.scalar_type();
    const auto narrow = [&](const at::Tensor& tensor) { return converted(tensor, dtype, backend); };
    return {narrow(std::get<0>(grads)), narrow(std::get<1>(grads)), narrow(std::get<2>(grads)),
            narrow(std::get<3>(grads)), narrow(std::get<4>(grads)), narrow(std::get<5>(grads)),
            narrow(std::get<6>(grads))};
  }
  const BackwardArgs args{sizes,
                          grad_output.contiguous(),
                          input.contiguous(),
                          h0.contiguous(),
                          c0.contiguous(),
                          w_ih.contiguous(),
                          w_hh.contiguous(),
                          w_hr.has_value() ? w_hr->contiguous() : at::Tensor(),
                          output,
                          gates.contiguous(),
                          cells.contiguous(),
                          hidden};
  return backward_layer(args, grad_h_n, grad_c_n, reverse, grad_input_mask, grad_weights_mask,
                        backend);
}

}  // namespace lstm_ext

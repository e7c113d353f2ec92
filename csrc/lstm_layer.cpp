#include "lstm_layer.h"

#include <ATen/Dispatch.h>
#include <ATen/ops/add.h>
#include <ATen/ops/addmm.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/sum.h>

#include <cstdint>
#include <vector>

#include "lstm_buffers.h"
#include "lstm_checks.h"

namespace lstm_ext {
namespace {

// Where one step's rows live and where their previous state comes from.
struct StepPlan {
  int64_t offset;          // first row of this step in the packed (N, .) buffers
  int64_t rows;            // batch_sizes[t]
  int64_t carried_rows;    // rows [0, carried_rows) continue from the step processed before ...
  int64_t carried_offset;  // ... whose rows start here; the other rows start from h0/c0
  int64_t finished_from;   // rows [finished_from, rows) end their sequence at this step
};

// Steps in the order the forward pass processes them: t = 0..T-1, or T-1..0 when reversed.
// With non-increasing batch sizes, the forward direction carries all rows of a step from the
// step before, and the reverse direction starts the extra rows of a longer step from h0/c0.
std::vector<StepPlan> plan_steps(const std::vector<int64_t>& batch_sizes, bool reverse) {
  const int64_t steps = static_cast<int64_t>(batch_sizes.size());
  std::vector<int64_t> offsets(steps + 1, 0);
  for (int64_t t = 0; t < steps; ++t) offsets[t + 1] = offsets[t] + batch_sizes[t];

  std::vector<StepPlan> plan;
  plan.reserve(steps);
  for (int64_t k = 0; k < steps; ++k) {
    const int64_t t = reverse ? steps - 1 - k : k;
    const int64_t previous_t = reverse ? t + 1 : t - 1;
    const int64_t next_t = reverse ? t - 1 : t + 1;
    const bool has_previous = previous_t >= 0 && previous_t < steps;
    const bool has_next = next_t >= 0 && next_t < steps;
    StepPlan step;
    step.offset = offsets[t];
    step.rows = batch_sizes[t];
    step.carried_rows = has_previous ? std::min(batch_sizes[t], batch_sizes[previous_t]) : 0;
    step.carried_offset = has_previous ? offsets[previous_t] : 0;
    step.finished_from = has_next ? std::min(batch_sizes[t], batch_sizes[next_t]) : 0;
    plan.push_back(step);
  }
  return plan;
}

template <typename scalar_t>
struct KernelsFor;
#define LSTM_EXT_KERNELS_FOR(scalar_type, suffix)                                               \
  template <>                                                                                \
  struct KernelsFor<scalar_type> {                                                           \
    static void (*forward(const StepKernels& kernels))(const ForwardStepParams<scalar_type>&) { \
      return kernels.forward_##suffix;                                                       \
    }                                                                                        \
    static void (*backward(const StepKernels& kernels))(                                     \
        const BackwardStepParams<scalar_type>&) {                                            \
      return kernels.backward_##suffix;                                                      \
    }                                                                                        \
  };
LSTM_EXT_KERNELS_FOR(float, float)
LSTM_EXT_KERNELS_FOR(double, double)
LSTM_EXT_KERNELS_FOR(c10::Half, half)
LSTM_EXT_KERNELS_FOR(c10::BFloat16, bfloat16)
#undef LSTM_EXT_KERNELS_FOR

// Consecutive steps (in processing order) whose input projection runs as one GEMM; their rows
// are contiguous in the packed layout.
struct ProjectionChunk {
  size_t first_step;   // index in the plan
  int64_t first_row;   // packed row
  int64_t rows;
};

// Chunks of at least target_rows rows each (but the last), in processing order.
std::vector<ProjectionChunk> plan_projection_chunks(const std::vector<StepPlan>& plan,
                                                    int64_t target_rows) {
  std::vector<ProjectionChunk> chunks;
  for (size_t k = 0; k < plan.size(); ++k) {
    if (chunks.empty() || chunks.back().rows >= target_rows) {
      chunks.push_back({k, plan[k].offset, 0});
    }
    ProjectionChunk& chunk = chunks.back();
    chunk.first_row = std::min(chunk.first_row, plan[k].offset);
    chunk.rows += plan[k].rows;
  }
  return chunks;
}

// The buffers' rows of every step (see StepLayout). When saving for backward, every
// buffer holds all N packed rows; otherwise the gates hold one projection chunk, the cells two
// step slots of B rows (this step's and the one before) and the pre-projection hidden state one.
std::vector<StepLayout> layout_forward_steps(const std::vector<StepPlan>& plan,
                                                    const std::vector<ProjectionChunk>& chunks,
                                                    bool save_for_backward, bool has_projection,
                                                    int64_t batch) {
  std::vector<StepLayout> layout(plan.size());
  int64_t chunk_first_row = 0;  // packed row held by the first row of the gates buffer
  auto next_chunk = chunks.begin();
  for (size_t k = 0; k < plan.size(); ++k) {
    const StepPlan& step = plan[k];
    StepLayout& entry = layout[k];
    entry.rows = step.rows;
    entry.carried_rows = step.carried_rows;
    entry.finished_from = step.finished_from;
    entry.row = step.offset;
    entry.prev_row = step.carried_offset;
    entry.project_row = 0;
    entry.project_rows = 0;
    entry.project_gate_row = 0;
    if (next_chunk != chunks.end() && next_chunk->first_step == k) {
      chunk_first_row = save_for_backward ? 0 : next_chunk->first_row;
      entry.project_row = next_chunk->first_row;
      entry.project_rows = next_chunk->rows;
      entry.project_gate_row = next_chunk->first_row - chunk_first_row;
      ++next_chunk;
    }
    entry.gate_row = step.offset - chunk_first_row;
    entry.cell_row = save_for_backward ? step.offset : int64_t(k % 2) * batch;
    entry.prev_cell_row = k > 0 ? layout[k - 1].cell_row : 0;
    entry.hidden_row = save_for_backward || !has_projection ? step.offset : 0;
  }
  return layout;
}

at::Tensor empty_saved(const at::Tensor& like) { return at::empty({0}, like.options()); }

// Whether a 16-bit layer runs through the backend's float32 layer kernel (`has_layer_kernel`):
// its tensors widened to float32, its results rounded back. Where a backend has that kernel
// (the CPU), 16-bit GEMMs may have no faster hardware to run on, and a step loop of ATen calls
// forgoes all that the layer kernel gains: on a Xeon without AVX512-BF16 that loop ran a B=64
// T=100 I=H=512 bfloat16 forward in 4.3x the float32 layer's time, 1.2x nn.LSTM's in bfloat16.
// The layer then keeps h and c in float32 between steps (more accurate than rounding them to 16
// bits at each step); what it stores and returns stays 16-bit.
bool widens_to_float(const at::Tensor& input, bool has_layer_kernel) {
  return has_layer_kernel &&
         (input.scalar_type() == at::kHalf || input.scalar_type() == at::kBFloat16);
}

// `tensor` in `dtype`, contiguous, in a buffer of empty_buffer's: converted afresh at every call,
// the widened weights and results of a large layer would fault in and zero new pages each time
// (B=1 T=100 I=H=1024: 1.3x the time of the float32 layer with at::Tensor::to, 1.0x this way).
at::Tensor converted(const at::Tensor& tensor, at::ScalarType dtype) {
  at::Tensor result = empty_buffer(tensor.sizes(), tensor.options().dtype(dtype));
  result.copy_(tensor);
  return result;
}

at::Tensor widened(const at::Tensor& tensor) { return converted(tensor, at::kFloat); }

std::optional<at::Tensor> widened(const std::optional<at::Tensor>& tensor) {
  return tensor.has_value() ? std::optional<at::Tensor>(widened(*tensor)) : std::nullopt;
}

// gates (rows, 4H) = input (rows, I) W_ih^T + bias, through ATen (bias undefined: none).
void project_input(at::Tensor gates, const at::Tensor& input, const at::Tensor& w_ih_t,
                   const at::Tensor& bias) {
  if (bias.defined()) {
    at::addmm_out(gates, bias, input, w_ih_t);
  } else {
    at::mm_out(gates, input, w_ih_t);
  }
}

// h_{t-1} of every row into previous_hidden (N, R; any strides), for dW_hh as one GEMM: carried
// rows come from the output of the step processed before, the others from h0. Consecutive row
// ranges that continue each other in source and destination are copied together (a padded
// batch needs two copies in all).
void gather_previous_hidden(const std::vector<StepPlan>& plan, const at::Tensor& output,
                            const at::Tensor& initial_hidden, const at::Tensor& previous_hidden) {
  struct RowCopy {
    const at::Tensor* source;
    int64_t source_row, target_row, rows;
  };
  std::vector<RowCopy> copies;
  auto add_copy = [&](const at::Tensor* source, int64_t source_row, int64_t target_row,
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
  for (const StepPlan& step : plan) {
    add_copy(&output, step.carried_offset, step.offset, step.carried_rows);
    add_copy(&initial_hidden, step.carried_rows, step.offset + step.carried_rows,
             step.rows - step.carried_rows);
  }
  for (const RowCopy& copy : copies) {
    previous_hidden.narrow(0, copy.target_row, copy.rows)
        .copy_(copy.source->narrow(0, copy.source_row, copy.rows));
  }
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

// lstm_layer_forward on checked arguments; w_hh_bfloat16: W_hh in bfloat16 when w_hh is that
// widened (see LayerForwardParams::w_hh_bfloat16), else undefined.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
forward_layer(const LayerSizes& sizes, const at::Tensor& input, const at::Tensor& h0,
              const at::Tensor& c0, const at::Tensor& w_ih, const at::Tensor& w_hh,
              const std::optional<at::Tensor>& b_ih, const std::optional<at::Tensor>& b_hh,
              const std::optional<at::Tensor>& w_hr, bool reverse, bool save_for_backward,
              const StepKernels& kernels, const at::Tensor& w_hh_bfloat16) {
  const int64_t N = sizes.rows;
  const int64_t B = sizes.batch;
  const int64_t H = sizes.hidden_size;
  const int64_t R = sizes.recurrent_size;
  const auto options = input.options();
  const at::Tensor initial_hidden = h0.contiguous();
  const at::Tensor initial_cell = c0.contiguous();
  const at::Tensor w_hh_t = w_hh.t();

  // The input projection runs as one GEMM per chunk of consecutive steps (one chunk, the whole
  // layer, unless the backend asks for smaller): the steps then read their gates while the chunk
  // is in cache. Through ATen both biases are folded into it (addmm). A layer kernel adds the
  // bias in its cell, whether it projects its chunks itself or the backend has the driver
  // project all rows first (through ATen, without the bias).
  const bool has_bias = b_ih.has_value() || b_hh.has_value();
  const at::Tensor bias = !has_bias                             ? at::Tensor()
                          : b_ih.has_value() && b_hh.has_value() ? at::add(*b_ih, *b_hh)
                          : b_ih.has_value()                     ? *b_ih
                                                                 : *b_hh;
  const bool layer_kernel = kernels.layer_forward_float != nullptr &&
                            input.scalar_type() == at::kFloat;
  const at::Tensor bias_contiguous = has_bias ? bias.contiguous() : at::Tensor();
  const int64_t chunk_target_rows =
      kernels.projection_chunk_rows != nullptr
          ? kernels.projection_chunk_rows(sizes.input_size, H,
                                          static_cast<int64_t>(input.element_size()))
          : N;

  const std::vector<StepPlan> plan = plan_steps(sizes.batch_sizes, reverse);
  const bool input_projected_first =
      layer_kernel && kernels.projects_input_first != nullptr &&
      kernels.projects_input_first(N, B, sizes.input_size, H, save_for_backward);
  const std::vector<ProjectionChunk> chunks =
      input_projected_first ? std::vector<ProjectionChunk>()
                            : plan_projection_chunks(plan, chunk_target_rows);
  const std::vector<StepLayout> layout =
      layout_forward_steps(plan, chunks, save_for_backward, sizes.has_projection, B);
  int64_t chunk_capacity = 0;
  for (const ProjectionChunk& chunk : chunks) chunk_capacity = std::max(chunk_capacity, chunk.rows);
  at::Tensor gates = empty_buffer(
      {save_for_backward || input_projected_first ? N : chunk_capacity, 4 * H}, options);
  // Without the bias, which the layer kernel adds in its cell: ATen's addmm would first copy
  // the bias into every row, a pass over all N x 4H gates before the GEMM (B=64 T=100 I=512
  // H=1024 P=256 training, alternated on a 2-core Xeon: 0.97x the time without it).
  if (input_projected_first) at::mm_out(gates, input, w_ih.t());
  at::Tensor output = empty_buffer({N, R}, options);
  at::Tensor cells = empty_buffer({save_for_backward ? N : 2 * B, H}, options);
  at::Tensor hidden = !sizes.has_projection ? output
                      : empty_buffer({save_for_backward ? N : B, H}, options);
  at::Tensor h_n = sizes.steps == 0 ? initial_hidden.clone() : at::empty({B, R}, options);
  at::Tensor c_n = sizes.steps == 0 ? initial_cell.clone() : at::empty({B, H}, options);

  if (layer_kernel) {
    const at::Tensor input_contiguous = input.contiguous();
    // W_ih only for the kernel's own projection (a copy if it is not contiguous).
    const at::Tensor w_ih_contiguous = input_projected_first ? at::Tensor() : w_ih.contiguous();
    const at::Tensor w_hh_contiguous = w_hh.contiguous();
    const at::Tensor w_hr_contiguous = sizes.has_projection ? w_hr->contiguous() : at::Tensor();
    at::Tensor w_ih_t_scratch =
        input_projected_first ? at::Tensor() : empty_buffer({sizes.input_size, 4 * H}, options);
    at::Tensor w_hh_t_scratch = empty_buffer({R, 4 * H}, options);
    at::Tensor w_hr_t_scratch = sizes.has_projection ? empty_buffer({H, R}, options) : at::Tensor();
    LayerForwardParams<float> params;
    params.steps = layout.data();
    params.num_steps = static_cast<int64_t>(layout.size());
    params.input = input_contiguous.const_data_ptr<float>();
    params.w_ih = input_projected_first ? nullptr : w_ih_contiguous.const_data_ptr<float>();
    params.bias = has_bias ? bias_contiguous.const_data_ptr<float>() : nullptr;
    params.w_hh = w_hh_contiguous.const_data_ptr<float>();
    params.w_hh_bfloat16 =
        w_hh_bfloat16.defined() ? w_hh_bfloat16.const_data_ptr<c10::BFloat16>() : nullptr;
    params.w_hr = sizes.has_projection ? w_hr_contiguous.const_data_ptr<float>() : nullptr;
    params.h0 = initial_hidden.const_data_ptr<float>();
    params.c0 = initial_cell.const_data_ptr<float>();
    params.w_ih_t = input_projected_first ? nullptr : w_ih_t_scratch.data_ptr<float>();
    params.w_hh_t = w_hh_t_scratch.data_ptr<float>();
    params.w_hr_t = sizes.has_projection ? w_hr_t_scratch.data_ptr<float>() : nullptr;
    params.gates = gates.data_ptr<float>();
    params.cells = cells.data_ptr<float>();
    params.hidden = hidden.data_ptr<float>();
    params.output = output.data_ptr<float>();
    params.h_n = h_n.data_ptr<float>();
    params.c_n = c_n.data_ptr<float>();
    params.input_size = sizes.input_size;
    params.hidden_size = H;
    params.recurrent_size = R;
    kernels.layer_forward_float(params);
  } else {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(),
                                    "lstm_layer_forward", [&] {
      const auto step_kernel = KernelsFor<scalar_t>::forward(kernels);
      TORCH_CHECK(step_kernel != nullptr, "lstm_ext.lstm_layer_forward: no ",
                  input.scalar_type(), " kernel for ", input.device().type());
      const at::Tensor w_ih_t = w_ih.t();
      for (const StepLayout& step : layout) {
        if (step.project_rows > 0) {
          project_input(gates.narrow(0, step.project_gate_row, step.project_rows),
                        input.narrow(0, step.project_row, step.project_rows), w_ih_t, bias);
        }
        if (step.rows == 0) continue;
        at::Tensor step_gates_rows = gates.narrow(0, step.gate_row, step.rows);
        if (step.carried_rows > 0) {
          step_gates_rows.narrow(0, 0, step.carried_rows)
              .addmm_(output.narrow(0, step.prev_row, step.carried_rows), w_hh_t);
        }
        const int64_t starting_rows = step.rows - step.carried_rows;
        if (starting_rows > 0) {
          step_gates_rows.narrow(0, step.carried_rows, starting_rows)
              .addmm_(initial_hidden.narrow(0, step.carried_rows, starting_rows), w_hh_t);
        }

        ForwardStepParams<scalar_t> params;
        params.gates = step_gates_rows.data_ptr<scalar_t>();
        params.prev_cell = cells.const_data_ptr<scalar_t>() + step.prev_cell_row * H;
        params.initial_cell = initial_cell.const_data_ptr<scalar_t>();
        params.cell = cells.data_ptr<scalar_t>() + step.cell_row * H;
        params.hidden = hidden.data_ptr<scalar_t>() + step.hidden_row * H;
        params.rows = step.rows;
        params.hidden_size = H;
        params.hidden_stride = H;
        params.carried_rows = step.carried_rows;
        step_kernel(params);

        if (sizes.has_projection) {
          at::Tensor step_output = output.narrow(0, step.row, step.rows);
          at::mm_out(step_output, hidden.narrow(0, step.hidden_row, step.rows), w_hr->t());
        }
        const int64_t finished_rows = step.rows - step.finished_from;
        if (finished_rows > 0) {
          h_n.narrow(0, step.finished_from, finished_rows)
              .copy_(output.narrow(0, step.row + step.finished_from, finished_rows));
          c_n.narrow(0, step.finished_from, finished_rows)
              .copy_(cells.narrow(0, step.cell_row + step.finished_from, finished_rows));
        }
      }
    });
  }

  if (!save_for_backward) {
    return {output, h_n, c_n, empty_saved(input), empty_saved(input), empty_saved(input)};
  }
  return {output, h_n, c_n, gates, cells,
          sizes.has_projection ? hidden : empty_saved(input)};
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
lstm_layer_forward(const at::Tensor& input, const at::Tensor& batch_sizes, const at::Tensor& h0,
                   const at::Tensor& c0, const at::Tensor& w_ih, const at::Tensor& w_hh,
                   const std::optional<at::Tensor>& b_ih, const std::optional<at::Tensor>& b_hh,
                   const std::optional<at::Tensor>& w_hr, bool reverse, bool save_for_backward,
                   const StepKernels& kernels) {
  const LayerSizes sizes = check_forward_args("lstm_ext.lstm_layer_forward", input, batch_sizes,
                                              h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr);
  if (!widens_to_float(input, kernels.layer_forward_float != nullptr)) {
    return forward_layer(sizes, input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, reverse,
                         save_for_backward, kernels, at::Tensor());
  }
  const at::ScalarType dtype = input.scalar_type();
  const auto [output, h_n, c_n, gates, cells, hidden] = forward_layer(
      sizes, widened(input), widened(h0), widened(c0), widened(w_ih), widened(w_hh),
      widened(b_ih), widened(b_hh), widened(w_hr), reverse, save_for_backward, kernels,
      dtype == at::kBFloat16 ? w_hh.contiguous() : at::Tensor());
  return {converted(output, dtype), converted(h_n, dtype),   converted(c_n, dtype),
          converted(gates, dtype),  converted(cells, dtype), converted(hidden, dtype)};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
lstm_layer_backward(const at::Tensor& grad_output, const at::Tensor& grad_h_n,
                    const at::Tensor& grad_c_n, const at::Tensor& input,
                    const at::Tensor& batch_sizes, const at::Tensor& h0, const at::Tensor& c0,
                    const at::Tensor& w_ih, const at::Tensor& w_hh,
                    const std::optional<at::Tensor>& w_hr, const at::Tensor& output,
                    const at::Tensor& gates, const at::Tensor& cells, const at::Tensor& hidden,
                    bool reverse, bool grad_input_mask, bool grad_weights_mask,
                    const StepKernels& kernels) {
  const char* op = "lstm_ext.lstm_layer_backward";
  const LayerSizes sizes = check_forward_args(op, input, batch_sizes, h0, c0, w_ih, w_hh,
                                              std::nullopt, std::nullopt, w_hr);
  check_backward_args(op, sizes, input, grad_output, grad_h_n, grad_c_n, output, gates, cells,
                      hidden);
  if (widens_to_float(input, kernels.layer_backward_float != nullptr)) {
    const auto [grad_input, grad_h0, grad_c0, grad_w_ih, grad_w_hh, grad_bias, grad_w_hr] =
        lstm_layer_backward(widened(grad_output), widened(grad_h_n), widened(grad_c_n),
                            widened(input), batch_sizes, widened(h0), widened(c0),
                            widened(w_ih), widened(w_hh), widened(w_hr), widened(output),
                            widened(gates), widened(cells), widened(hidden), reverse,
                            grad_input_mask, grad_weights_mask, kernels);
    const at::ScalarType dtype = input.scalar_type();
    return {converted(grad_input, dtype), converted(grad_h0, dtype),   converted(grad_c0, dtype),
            converted(grad_w_ih, dtype),  converted(grad_w_hh, dtype), converted(grad_bias, dtype),
            converted(grad_w_hr, dtype)};
  }
  const int64_t N = sizes.rows;
  const int64_t B = sizes.batch;
  const int64_t H = sizes.hidden_size;
  const int64_t R = sizes.recurrent_size;
  const auto options = input.options();
  const at::Tensor grad_output_rows = grad_output.contiguous();
  const at::Tensor saved_gates = gates.contiguous();
  const at::Tensor saved_cells = cells.contiguous();
  const at::Tensor initial_hidden = h0.contiguous();
  const at::Tensor initial_cell = c0.contiguous();

  // Gradients flowing back into each row's previous state: start as those of the final states
  // and end as those of the initial states (see plan_steps: a row's first processed step in
  // reverse order is its last step, which no later step has touched).
  at::Tensor grad_hidden_state = grad_h_n.contiguous().clone();  // (B, R)
  at::Tensor grad_cell_state = grad_c_n.contiguous().clone();    // (B, H)
  at::Tensor grad_gates = empty_buffer({N, 4 * H}, options);
  const std::vector<StepPlan> plan = plan_steps(sizes.batch_sizes, reverse);
  at::Tensor grad_projected =
      sizes.has_projection ? empty_buffer({N, R}, options) : at::Tensor();
  at::Tensor grad_hidden_step = sizes.has_projection ? at::empty({B, H}, options) : at::Tensor();

  const at::Tensor w_hh_contiguous = w_hh.contiguous();
  if (kernels.layer_backward_float != nullptr && input.scalar_type() == at::kFloat) {
    const std::vector<StepLayout> layout =
        layout_forward_steps(plan, {}, /*save_for_backward=*/true, sizes.has_projection, B);
    const at::Tensor w_hr_contiguous = sizes.has_projection ? w_hr->contiguous() : at::Tensor();
    LayerBackwardParams<float> params;
    params.steps = layout.data();
    params.num_steps = static_cast<int64_t>(layout.size());
    params.grad_output = grad_output_rows.const_data_ptr<float>();
    params.gates = saved_gates.const_data_ptr<float>();
    params.cells = saved_cells.const_data_ptr<float>();
    params.c0 = initial_cell.const_data_ptr<float>();
    params.w_hh = w_hh_contiguous.const_data_ptr<float>();
    params.w_hr = sizes.has_projection ? w_hr_contiguous.const_data_ptr<float>() : nullptr;
    params.grad_gates = grad_gates.data_ptr<float>();
    params.grad_projected = sizes.has_projection ? grad_projected.data_ptr<float>() : nullptr;
    params.grad_hidden = sizes.has_projection ? grad_hidden_step.data_ptr<float>() : nullptr;
    params.grad_hidden_state = grad_hidden_state.data_ptr<float>();
    params.grad_cell_state = grad_cell_state.data_ptr<float>();
    at::Tensor w_hh_columns = empty_buffer({4 * H, R}, options);
    at::Tensor w_hr_columns = sizes.has_projection ? empty_buffer({R, H}, options) : at::Tensor();
    params.w_hh_columns = w_hh_columns.data_ptr<float>();
    params.w_hr_columns = sizes.has_projection ? w_hr_columns.data_ptr<float>() : nullptr;
    params.hidden_size = H;
    params.recurrent_size = R;
    kernels.layer_backward_float(params);
  } else {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(),
                                    "lstm_layer_backward", [&] {
      const auto step_kernel = KernelsFor<scalar_t>::backward(kernels);
      TORCH_CHECK(step_kernel != nullptr, op, ": no ", input.scalar_type(), " kernel for ",
                  input.device().type());
      for (auto step = plan.rbegin(); step != plan.rend(); ++step) {
        if (step->rows == 0) continue;
        BackwardStepParams<scalar_t> params;
        if (sizes.has_projection) {
          at::Tensor grad_projected_step = grad_projected.narrow(0, step->offset, step->rows);
          at::add_out(grad_projected_step, grad_output_rows.narrow(0, step->offset, step->rows),
                      grad_hidden_state.narrow(0, 0, step->rows));
          at::Tensor grad_hidden_rows = grad_hidden_step.narrow(0, 0, step->rows);
          at::mm_out(grad_hidden_rows, grad_projected_step, *w_hr);
          params.grad_hidden = grad_hidden_step.const_data_ptr<scalar_t>();
          params.grad_hidden_stride = H;
          params.grad_hidden_recurrent = nullptr;
        } else {
          params.grad_hidden = grad_output_rows.const_data_ptr<scalar_t>() + step->offset * R;
          params.grad_hidden_stride = R;
          params.grad_hidden_recurrent = grad_hidden_state.const_data_ptr<scalar_t>();
        }
        params.gates = saved_gates.const_data_ptr<scalar_t>() + step->offset * 4 * H;
        params.cell = saved_cells.const_data_ptr<scalar_t>() + step->offset * H;
        params.prev_cell = saved_cells.const_data_ptr<scalar_t>() + step->carried_offset * H;
        params.initial_cell = initial_cell.const_data_ptr<scalar_t>();
        params.grad_cell = grad_cell_state.data_ptr<scalar_t>();
        params.grad_gates = grad_gates.data_ptr<scalar_t>() + step->offset * 4 * H;
        params.rows = step->rows;
        params.hidden_size = H;
        params.carried_rows = step->carried_rows;
        step_kernel(params);
        at::Tensor grad_hidden_state_rows = grad_hidden_state.narrow(0, 0, step->rows);
        at::mm_out(grad_hidden_state_rows, grad_gates.narrow(0, step->offset, step->rows),
                   w_hh_contiguous);
      }
    });
  }
  // Input, weight and bias gradients, those asked for: one GEMM or reduction each over all N
  // rows (the input's is a third of the work after the loop, and a first layer's input seldom
  // needs it).
  const GemmFloat backend_gemm =
      kernels.gemm_float != nullptr && input.scalar_type() == at::kFloat
          ? kernels.gemm_float(N * 4 * H * (sizes.input_size + R))
          : nullptr;
  const int64_t I = sizes.input_size;
  at::Tensor grad_input = empty_saved(input);
  if (grad_input_mask && backend_gemm != nullptr) {
    grad_input = empty_buffer({N, I}, options);
    backend_gemm(product(grad_gates, /*transpose_a=*/false, w_ih.contiguous(), grad_input));
  } else if (grad_input_mask) {
    grad_input = at::mm(grad_gates, w_ih);
  }
  if (!grad_weights_mask) {
    return {grad_input,         grad_hidden_state,  grad_cell_state,   empty_saved(input),
            empty_saved(input), empty_saved(input), empty_saved(input)};
  }
  at::Tensor grad_w_ih, grad_w_hh, grad_bias;
  at::Tensor grad_w_hr = empty_saved(input);
  at::Tensor previous_hidden = empty_buffer({N, R}, options);
  gather_previous_hidden(plan, output, initial_hidden, previous_hidden);
  if (backend_gemm != nullptr) {
    // dW_ih = dG^T x, dW_hh = dG^T h_{t-1} and db = the column sums of dG in one pass.
    grad_w_ih = at::empty({4 * H, I}, options);
    grad_w_hh = at::empty({4 * H, R}, options);
    grad_bias = at::empty({4 * H}, options);
    const at::Tensor input_contiguous = input.contiguous();
    GemmParams weights = product(grad_gates, /*transpose_a=*/true, input_contiguous, grad_w_ih);
    weights.N2 = R;
    weights.B2 = previous_hidden.const_data_ptr<float>();
    weights.ldb2 = R;
    weights.C2 = grad_w_hh.data_ptr<float>();
    weights.ldc2 = R;
    weights.a_column_sums = grad_bias.data_ptr<float>();
    backend_gemm(weights);
    if (sizes.has_projection) {
      grad_w_hr = at::empty({R, H}, options);
      backend_gemm(product(grad_projected, /*transpose_a=*/true, hidden.contiguous(), grad_w_hr));
    }
  } else {
    const at::Tensor grad_gates_t = grad_gates.t();
    grad_w_ih = at::mm(grad_gates_t, input);
    grad_w_hh = at::mm(grad_gates_t, previous_hidden);
    grad_bias = grad_gates.sum(0);
    if (sizes.has_projection) grad_w_hr = at::mm(grad_projected.t(), hidden);
  }
  return {grad_input, grad_hidden_state, grad_cell_state, grad_w_ih, grad_w_hh, grad_bias,
          grad_w_hr};
}

}  // namespace lstm_ext

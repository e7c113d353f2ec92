// The forward half of the layer driver (lstm_layer.h): plans the steps and the input
// projection's chunks, allocates the buffers, and runs the steps through the backend's float32
// layer kernel or one step at a time through ATen and the backend's step kernels.
#include <ATen/ops/add.h>
#include <ATen/ops/addmm.h>
#include <ATen/ops/clone.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/mm.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "core/lstm_checks.h"
#include "core/lstm_layer.h"
#include "core/step_kernel_choice.h"
#include "core/step_layout.h"
#include "core/widening.h"

namespace lstm_ext {
namespace {

// The checked arguments of one forward layer.
struct ForwardArgs {
  const LayerSizes& sizes;
  at::Tensor input;                       // (N, I)
  at::Tensor h0;                          // (B, R) contiguous
  at::Tensor c0;                          // (B, H) contiguous
  const at::Tensor& w_ih;                 // (4H, I)
  const at::Tensor& w_hh;                 // (4H, R)
  at::Tensor bias;                        // (4H) b_ih + b_hh contiguous, or undefined: no bias
  const std::optional<at::Tensor>& w_hr;  // (P, H)
  bool save_for_backward;
};

// What a forward layer writes; gates, cells and hidden (the pre-projection h_t, the output
// itself without w_hr) are laid out as the steps say.
struct ForwardBuffers {
  at::Tensor gates, cells, hidden, output, h_n, c_n;
};

// b_ih + b_hh, the one of them given, or undefined.
at::Tensor summed_bias(const std::optional<at::Tensor>& b_ih,
                       const std::optional<at::Tensor>& b_hh) {
  if (b_ih.has_value() && b_hh.has_value()) return at::add(*b_ih, *b_hh);
  if (b_ih.has_value()) return b_ih->contiguous();
  if (b_hh.has_value()) return b_hh->contiguous();
  return at::Tensor();
}

// `weight` contiguous and 64-byte aligned, copied where it is not: the layer kernels read the
// recurrent weights every step in full vectors, which a misaligned weight splits across cache
// lines. AOTInductor keeps a CPU model's constants 16-byte aligned.
at::Tensor aligned_contiguous(const at::Tensor& weight) {
  constexpr uintptr_t kAlignment = 64;
  const auto address = reinterpret_cast<uintptr_t>(weight.const_data_ptr());
  if (weight.is_contiguous() && address % kAlignment == 0) return weight;
  return weight.clone(at::MemoryFormat::Contiguous);  // the CPU allocator aligns to 64 bytes
}

ForwardBuffers allocate_forward(const ForwardArgs& args, int64_t gate_rows,
                                const Backend& backend) {
  const LayerSizes& sizes = args.sizes;
  const int64_t N = sizes.rows;
  const int64_t B = sizes.batch;
  const int64_t H = sizes.hidden_size;
  const auto options = args.input.options();
  ForwardBuffers out;
  out.gates = backend.empty({gate_rows, 4 * H}, options);
  out.output = backend.empty({N, sizes.recurrent_size}, options);
  out.cells = backend.empty({args.save_for_backward ? N : 2 * B, H}, options);
  out.hidden = !sizes.has_projection ? out.output
                                     : backend.empty({args.save_for_backward ? N : B, H}, options);
  out.h_n = sizes.steps == 0 ? args.h0.clone() : at::empty({B, sizes.recurrent_size}, options);
  out.c_n = sizes.steps == 0 ? args.c0.clone() : at::empty({B, H}, options);
  return out;
}

// The whole layer through the backend's float32 layer kernel; w_hh_bfloat16: see
// LayerForwardParams::w_hh_bfloat16 (undefined: none).
void run_float_layer(const ForwardArgs& args, const std::vector<StepLayout>& steps,
                     bool input_projected_first, const at::Tensor& w_hh_bfloat16,
                     const ForwardBuffers& out, const Backend& backend) {
  const LayerSizes& sizes = args.sizes;
  const int64_t H = sizes.hidden_size;
  const auto options = args.input.options();
  const at::Tensor input = args.input.contiguous();
  // W_ih only for the kernel's own projection.
  const at::Tensor w_ih = input_projected_first ? at::Tensor() : args.w_ih.contiguous();
  const at::Tensor w_hh = aligned_contiguous(args.w_hh);
  const at::Tensor w_hr = sizes.has_projection ? aligned_contiguous(*args.w_hr) : at::Tensor();
  const at::Tensor w_ih_t_scratch =
      input_projected_first ? at::Tensor() : backend.empty({sizes.input_size, 4 * H}, options);
  const at::Tensor w_hh_t_scratch = backend.empty({sizes.recurrent_size, 4 * H}, options);
  const at::Tensor w_hr_t_scratch =
      sizes.has_projection ? backend.empty({H, sizes.recurrent_size}, options) : at::Tensor();
  const auto pointer = [](const at::Tensor& tensor) {
    return tensor.defined() ? tensor.data_ptr<float>() : nullptr;
  };
  LayerForwardParams<float> params;
  params.steps = steps.data();
  params.num_steps = static_cast<int64_t>(steps.size());
  params.input = pointer(input);
  params.w_ih = pointer(w_ih);
  params.bias = pointer(args.bias);
  params.w_hh = pointer(w_hh);
  params.w_hh_bfloat16 =
      w_hh_bfloat16.defined() ? w_hh_bfloat16.const_data_ptr<c10::BFloat16>() : nullptr;
  params.w_hr = pointer(w_hr);
  params.h0 = pointer(args.h0);
  params.c0 = pointer(args.c0);
  params.w_ih_t = pointer(w_ih_t_scratch);
  params.w_hh_t = pointer(w_hh_t_scratch);
  params.w_hr_t = pointer(w_hr_t_scratch);
  params.gates = pointer(out.gates);
  params.cells = pointer(out.cells);
  params.hidden = pointer(out.hidden);
  params.output = pointer(out.output);
  params.h_n = pointer(out.h_n);
  params.c_n = pointer(out.c_n);
  params.input_size = sizes.input_size;
  params.hidden_size = H;
  params.recurrent_size = sizes.recurrent_size;
  backend.float_layer->forward(params);
}

// One step through ATen: its recurrent GEMMs (and before them its chunk's input projection,
// with the bias), the step kernel, the output projection and the finished rows' states.
template <typename scalar_t>
void run_aten_step(const ForwardArgs& args, const StepLayout& step, const ForwardBuffers& out,
                   void (*step_kernel)(const ForwardStepParams<scalar_t>&)) {
  const int64_t H = args.sizes.hidden_size;
  if (step.project_rows > 0) {
    at::Tensor chunk_gates = out.gates.narrow(0, step.project_gate_row, step.project_rows);
    const at::Tensor chunk_input = args.input.narrow(0, step.project_row, step.project_rows);
    if (args.bias.defined()) {
      at::addmm_out(chunk_gates, args.bias, chunk_input, args.w_ih.t());
    } else {
      at::mm_out(chunk_gates, chunk_input, args.w_ih.t());
    }
  }
  if (step.rows == 0) return;
  at::Tensor step_gates = out.gates.narrow(0, step.gate_row, step.rows);
  if (step.carried_rows > 0) {
    step_gates.narrow(0, 0, step.carried_rows)
        .addmm_(out.output.narrow(0, step.prev_row, step.carried_rows), args.w_hh.t());
  }
  const int64_t starting_rows = step.rows - step.carried_rows;
  if (starting_rows > 0) {
    step_gates.narrow(0, step.carried_rows, starting_rows)
        .addmm_(args.h0.narrow(0, step.carried_rows, starting_rows), args.w_hh.t());
  }
  step_kernel(forward_step_params<scalar_t>(
      step, H, out.gates.data_ptr<scalar_t>(), out.cells.data_ptr<scalar_t>(),
      out.hidden.data_ptr<scalar_t>(), args.c0.const_data_ptr<scalar_t>(), nullptr));
  if (args.sizes.has_projection) {
    at::Tensor step_output = out.output.narrow(0, step.row, step.rows);
    at::mm_out(step_output, out.hidden.narrow(0, step.hidden_row, step.rows), args.w_hr->t());
  }
  const int64_t finished_rows = step.rows - step.finished_from;
  if (finished_rows > 0) {
    out.h_n.narrow(0, step.finished_from, finished_rows)
        .copy_(out.output.narrow(0, step.row + step.finished_from, finished_rows));
    out.c_n.narrow(0, step.finished_from, finished_rows)
        .copy_(out.cells.narrow(0, step.cell_row + step.finished_from, finished_rows));
  }
}

void run_aten_steps(const ForwardArgs& args, const std::vector<StepLayout>& steps,
                    const ForwardBuffers& out, const Backend& backend) {
  with_step_kernel</*kForward=*/true>("lstm_ext.lstm_layer_forward", args.input, backend.steps,
                                      [&](auto step_kernel) {
                                        for (const StepLayout& step : steps)
                                          run_aten_step(args, step, out, step_kernel);
                                      });
}

// lstm_layer_forward on checked arguments; w_hh_bfloat16: see run_float_layer.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
forward_layer(const ForwardArgs& args, bool reverse, const Backend& backend,
              const at::Tensor& w_hh_bfloat16) {
  const LayerSizes& sizes = args.sizes;
  const LayerPolicy* policy = backend.policy;
  const FloatLayerKernels* float_layer = backend.float_layer;
  const bool layer_kernel =
      float_layer != nullptr && args.input.scalar_type() == at::kFloat &&
      (float_layer->takes_forward == nullptr ||
       float_layer->takes_forward(sizes.rows, sizes.hidden_size, sizes.recurrent_size,
                                  sizes.has_projection));
  const bool input_projected_first =
      layer_kernel && policy != nullptr &&
      policy->projects_input_first(sizes.rows, sizes.batch, sizes.input_size, sizes.hidden_size,
                                   args.save_for_backward);
  // The input projection runs as one GEMM per chunk of consecutive steps (one chunk, the whole
  // layer, unless the policy asks for smaller): the steps then read their gates while the chunk
  // is in cache. Projected first, it is one GEMM before the layer kernel, without the bias, which
  // the kernel adds in its cell (ATen's addmm would first copy it into every row).
  const int64_t chunk_rows =
      policy != nullptr ? policy->projection_chunk_rows(sizes.input_size, sizes.hidden_size,
                                                        args.input.element_size())
                        : sizes.rows;
  std::vector<StepLayout> steps = plan_steps(sizes.batch_sizes, reverse);
  const std::vector<ProjectionChunk> chunks = input_projected_first
                                                  ? std::vector<ProjectionChunk>()
                                                  : plan_projection_chunks(steps, chunk_rows);
  // The layer kernel's threads may each run a share of the batch rows apart (cpu/policy.h).
  const int64_t gate_rows = lay_out_forward(steps, chunks, args.save_for_backward,
                                            sizes.has_projection, sizes.batch, layer_kernel);
  ForwardBuffers out = allocate_forward(args, gate_rows, backend);
  if (input_projected_first) at::mm_out(out.gates, args.input, args.w_ih.t());
  if (layer_kernel) {
    run_float_layer(args, steps, input_projected_first, w_hh_bfloat16, out, backend);
  } else {
    run_aten_steps(args, steps, out, backend);
  }
  const auto empty = [&] { return at::empty({0}, args.input.options()); };
  if (!args.save_for_backward) return {out.output, out.h_n, out.c_n, empty(), empty(), empty()};
  return {out.output, out.h_n,   out.c_n,
          out.gates,  out.cells, sizes.has_projection ? out.hidden : empty()};
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
lstm_layer_forward(const at::Tensor& input, const at::Tensor& batch_sizes, const at::Tensor& h0,
                   const at::Tensor& c0, const at::Tensor& w_ih, const at::Tensor& w_hh,
                   const std::optional<at::Tensor>& b_ih, const std::optional<at::Tensor>& b_hh,
                   const std::optional<at::Tensor>& w_hr, bool reverse, bool save_for_backward,
                   const Backend& backend) {
  const LayerSizes sizes = check_forward_args("lstm_ext.lstm_layer_forward", input, batch_sizes, h0,
                                              c0, w_ih, w_hh, b_ih, b_hh, w_hr);
  if (!widens_to_float(input, backend)) {
    const ForwardArgs args{sizes,
                           input,
                           h0.contiguous(),
                           c0.contiguous(),
                           w_ih,
                           w_hh,
                           summed_bias(b_ih, b_hh),
                           w_hr,
                           save_for_backward};
    return forward_layer(args, reverse, backend, at::Tensor());
  }
  const at::ScalarType dtype = input.scalar_type();
  const at::Tensor wide_w_ih = widened(w_ih, backend);
  const at::Tensor wide_w_hh = widened(w_hh, backend);
  const std::optional<at::Tensor> wide_w_hr = widened(w_hr, backend);
  const ForwardArgs args{sizes,
                         widened(input, backend),
                         widened(h0, backend),
                         widened(c0, backend),
                         wide_w_ih,
                         wide_w_hh,
                         summed_bias(widened(b_ih, backend), widened(b_hh, backend)),
                         wide_w_hr,
                         save_for_backward};
  const auto [output, h_n, c_n, gates, cells, hidden] = forward_layer(
      args, reverse, backend, dtype == at::kBFloat16 ? w_hh.contiguous() : at::Tensor());
  const auto narrowed = [&](const at::Tensor& tensor) { return converted(tensor, dtype, backend); };
  return {narrowed(output), narrowed(h_n),   narrowed(c_n),
          narrowed(gates),  narrowed(cells), narrowed(hidden)};
}

}  // namespace lstm_ext

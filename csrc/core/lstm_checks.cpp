#include "core/lstm_checks.h"

#include <c10/util/Exception.h>

#include <sstream>
#include <string>

namespace lstm_ext {
namespace {

std::string shape_string(at::IntArrayRef sizes) {
  std::ostringstream out;
  out << "(";
  for (size_t i = 0; i < sizes.size(); ++i) {
    out << (i ? ", " : "") << sizes[i];
  }
  out << (sizes.size() == 1 ? ",)" : ")");
  return out.str();
}

// `description` spells the expected shape in symbols, e.g. "(4*hidden_size, input_size)".
void check_shape(const char* op, const char* name, const at::Tensor& tensor,
                 at::IntArrayRef expected, const char* description) {
  TORCH_CHECK(tensor.sizes() == expected, op, ": ", name, " has shape ",
              shape_string(tensor.sizes()), ", expected ", description, " = ",
              shape_string(expected));
}

void check_like_input(const char* op, const char* name, const at::Tensor& tensor,
                      const at::Tensor& input) {
  TORCH_CHECK(tensor.device() == input.device(), op, ": ", name, " is on ", tensor.device(),
              ", expected ", input.device(), " like input");
  TORCH_CHECK(tensor.scalar_type() == input.scalar_type(), op, ": ", name, " has dtype ",
              tensor.scalar_type(), ", expected ", input.scalar_type(), " like input");
}

}  // namespace

LayerSizes check_forward_args(const char* op, const at::Tensor& input,
                              const at::Tensor& batch_sizes, const at::Tensor& h0,
                              const at::Tensor& c0, const at::Tensor& w_ih, const at::Tensor& w_hh,
                              const std::optional<at::Tensor>& b_ih,
                              const std::optional<at::Tensor>& b_hh,
                              const std::optional<at::Tensor>& w_hr) {
  const auto dtype = input.scalar_type();
  TORCH_CHECK(
      dtype == at::kFloat || dtype == at::kDouble || dtype == at::kHalf || dtype == at::kBFloat16,
      op, ": input has dtype ", dtype, ", expected one of float32, float64, float16, bfloat16");
  TORCH_CHECK(input.dim() == 2, op, ": input has shape ", shape_string(input.sizes()),
              ", expected 2 dimensions (rows, input_size)");
  TORCH_CHECK(w_ih.dim() == 2 && w_ih.size(0) % 4 == 0 && w_ih.size(0) > 0, op, ": w_ih has shape ",
              shape_string(w_ih.sizes()),
              ", expected (4*hidden_size, input_size) with hidden_size > 0");

  LayerSizes sizes;
  sizes.rows = input.size(0);
  sizes.input_size = input.size(1);
  sizes.hidden_size = w_ih.size(0) / 4;
  sizes.has_projection = w_hr.has_value();
  const int64_t H = sizes.hidden_size;
  if (w_hr.has_value()) {
    TORCH_CHECK(w_hr->dim() == 2, op, ": w_hr has shape ", shape_string(w_hr->sizes()),
                ", expected (proj_size, hidden_size)");
    sizes.recurrent_size = w_hr->size(0);
    TORCH_CHECK(sizes.recurrent_size > 0, op, ": w_hr has shape ", shape_string(w_hr->sizes()),
                ", expected proj_size > 0");
    check_shape(op, "w_hr", *w_hr, {sizes.recurrent_size, H}, "(proj_size, hidden_size)");
  } else {
    sizes.recurrent_size = H;
  }
  const int64_t R = sizes.recurrent_size;
  check_shape(op, "w_ih", w_ih, {4 * H, sizes.input_size}, "(4*hidden_size, input_size)");
  check_shape(op, "w_hh", w_hh, {4 * H, R},
              w_hr.has_value() ? "(4*hidden_size, proj_size)" : "(4*hidden_size, hidden_size)");
  if (b_ih.has_value()) check_shape(op, "b_ih", *b_ih, {4 * H}, "(4*hidden_size,)");
  if (b_hh.has_value()) check_shape(op, "b_hh", *b_hh, {4 * H}, "(4*hidden_size,)");

  TORCH_CHECK(batch_sizes.device().is_cpu() && batch_sizes.scalar_type() == at::kLong &&
                  batch_sizes.dim() == 1,
              op, ": batch_sizes must be a 1-D int64 tensor on the CPU, got ",
              batch_sizes.scalar_type(), " of shape ", shape_string(batch_sizes.sizes()), " on ",
              batch_sizes.device());
  const at::Tensor batch_sizes_contiguous = batch_sizes.contiguous();
  const int64_t* batch_size_data = batch_sizes_contiguous.const_data_ptr<int64_t>();
  sizes.steps = batch_sizes.size(0);
  sizes.batch_sizes.assign(batch_size_data, batch_size_data + sizes.steps);
  sizes.batch = h0.dim() > 0 ? h0.size(0) : 0;
  check_shape(op, "h0", h0, {sizes.batch, R},
              w_hr.has_value() ? "(batch, proj_size)" : "(batch, hidden_size)");
  check_shape(op, "c0", c0, {sizes.batch, H}, "(batch, hidden_size)");

  int64_t total_rows = 0;
  int64_t previous = sizes.batch;
  for (int64_t t = 0; t < sizes.steps; ++t) {
    const int64_t step_rows = sizes.batch_sizes[t];
    TORCH_CHECK(step_rows >= 0 && step_rows <= previous, op, ": batch_sizes[", t, "] = ", step_rows,
                ", expected a non-increasing sequence in [0, ", previous, "]",
                t == 0 ? " (the batch size of h0)" : "");
    TORCH_CHECK(t > 0 || step_rows == sizes.batch, op, ": batch_sizes[0] = ", step_rows,
                ", expected the batch size of h0, ", sizes.batch);
    total_rows += step_rows;
    previous = step_rows;
  }
  check_shape(op, "input", input, {total_rows, sizes.input_size}, "(sum(batch_sizes), input_size)");

  check_like_input(op, "h0", h0, input);
  check_like_input(op, "c0", c0, input);
  check_like_input(op, "w_ih", w_ih, input);
  check_like_input(op, "w_hh", w_hh, input);
  if (b_ih.has_value()) check_like_input(op, "b_ih", *b_ih, input);
  if (b_hh.has_value()) check_like_input(op, "b_hh", *b_hh, input);
  if (w_hr.has_value()) check_like_input(op, "w_hr", *w_hr, input);
  return sizes;
}

void check_backward_args(const char* op, const LayerSizes& sizes, const at::Tensor& input,
                         const at::Tensor& grad_output, const at::Tensor& grad_h_n,
                         const at::Tensor& grad_c_n, const at::Tensor& output,
                         const at::Tensor& gates, const at::Tensor& cells,
                         const at::Tensor& hidden) {
  const int64_t N = sizes.rows;
  const int64_t H = sizes.hidden_size;
  const int64_t R = sizes.recurrent_size;
  check_shape(op, "grad_output", grad_output, {N, R}, "(rows, R)");
  check_shape(op, "grad_h_n", grad_h_n, {sizes.batch, R}, "(batch, R)");
  check_shape(op, "grad_c_n", grad_c_n, {sizes.batch, H}, "(batch, hidden_size)");
  check_shape(op, "output", output, {N, R}, "(rows, R)");
  check_shape(op, "gates", gates, {N, 4 * H}, "(rows, 4*hidden_size)");
  check_shape(op, "cells", cells, {N, H}, "(rows, hidden_size)");
  if (sizes.has_projection) {
    check_shape(op, "hidden", hidden, {N, H}, "(rows, hidden_size)");
  }
  check_like_input(op, "grad_output", grad_output, input);
  check_like_input(op, "grad_h_n", grad_h_n, input);
  check_like_input(op, "grad_c_n", grad_c_n, input);
  check_like_input(op, "output", output, input);
  check_like_input(op, "gates", gates, input);
  check_like_input(op, "cells", cells, input);
  if (sizes.has_projection) check_like_input(op, "hidden", hidden, input);
}

}  // namespace lstm_ext

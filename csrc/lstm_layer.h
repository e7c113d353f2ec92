// The LSTM layer driver: the GEMMs and the step loop, shared by the CPU and CUDA operators.
//
// Sequences are in PyTorch's packed, time-major layout: the rows of step t are the first
// batch_sizes[t] sequences (batch_sizes non-increasing), stored one step after another. A padded
// (T, B) batch is the special case batch_sizes = [B] * T. Notation: N = sum(batch_sizes) rows,
// B = batch_sizes[0], I = input size, H = hidden size, R = P (projection size) when w_hr is given,
// else H.
//
// The device-specific part is only the fused pointwise pass of a step, which the caller supplies
// as `StepKernels` (the CPU loop in lstm_cpu.cpp, the CUDA kernels in cuda/).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <c10/util/Optional.h>

#include <tuple>

#include "lstm_math.h"

namespace lstm_ext {

// The input projection of every step, for backends that run it with their own GEMM:
// gates = input W_ih^T + bias.
template <typename scalar_t>
struct InputProjectionParams {
  const scalar_t* input;   // (rows, input_size) contiguous
  const scalar_t* w_ih_t;  // (input_size, gate_size) W_ih transposed, contiguous
  const scalar_t* bias;    // (gate_size) b_ih + b_hh, or nullptr
  scalar_t* gates;         // (rows, gate_size) out
  int64_t rows;
  int64_t input_size;      // I
  int64_t gate_size;       // 4H
};

// The recurrent GEMM of a forward step, for backends that run it inside their step kernel:
// gates[r] += h_{t-1}[r] W_hh^T, where rows [0, carried_rows) of h_{t-1} are rows of the step
// processed before and the others rows of h0 (see ForwardStepParams).
template <typename scalar_t>
struct RecurrentGemmParams {
  const scalar_t* prev_hidden;     // (carried_rows, R) h_{t-1} of the carried rows
  const scalar_t* initial_hidden;  // (>= rows, R) h0, read for rows >= carried_rows
  const scalar_t* w_hh_t;          // (R, 4H) W_hh transposed, contiguous
  int64_t recurrent_size;          // R
};

// The recurrent-gradient GEMM of a backward step, for backends that run it inside their step
// kernel after the pointwise pass: grad_prev_hidden = grad_gates W_hh.
template <typename scalar_t>
struct RecurrentGradGemmParams {
  scalar_t* grad_prev_hidden;  // (rows, R) out: dL/dh_{t-1}
  const scalar_t* w_hh;        // (4H, R) contiguous
  int64_t recurrent_size;      // R
};

// One fused pointwise pass of a step, per storage type. The float32 GEMM hooks are optional:
// when set, `fused_forward_float` and `fused_backward_float` run the recurrent GEMM of a step
// together with its pointwise pass, and `input_projection_float` the input projection (the
// CPU path, where raw GEMM kernels in one parallel region per pass beat ATen's calls at every
// batch size). When null, the driver runs those GEMMs through ATen.
struct StepKernels {
  void (*forward_float)(const ForwardStepParams<float>&);
  void (*forward_double)(const ForwardStepParams<double>&);
  void (*forward_half)(const ForwardStepParams<c10::Half>&);
  void (*forward_bfloat16)(const ForwardStepParams<c10::BFloat16>&);
  void (*backward_float)(const BackwardStepParams<float>&);
  void (*backward_double)(const BackwardStepParams<double>&);
  void (*backward_half)(const BackwardStepParams<c10::Half>&);
  void (*backward_bfloat16)(const BackwardStepParams<c10::BFloat16>&);
  void (*fused_forward_float)(const ForwardStepParams<float>&, const RecurrentGemmParams<float>&);
  void (*fused_backward_float)(const BackwardStepParams<float>&,
                               const RecurrentGradGemmParams<float>&);
  void (*input_projection_float)(const InputProjectionParams<float>&);
  // Rows from which `input_projection_float` runs; below, the transpose of W_ih it needs costs
  // more than it gains over ATen's GEMM.
  int64_t input_projection_min_rows;
  // Bytes of gates per input-projection GEMM (0: one GEMM for the whole layer). A chunk that
  // fits the caches is read back from them by its steps.
  int64_t projection_chunk_bytes;
};

// Returns (output (N, R), h_n (B, R), c_n (B, H), gates (N, 4H), cells (N, H), hidden (N, H)).
// gates, cells and hidden (the pre-projection h, only with w_hr) are what backward needs; they
// are empty (0,) tensors unless save_for_backward.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
lstm_layer_forward(const at::Tensor& input,        // (N, I)
                   const at::Tensor& batch_sizes,  // (T,) int64 on the CPU
                   const at::Tensor& h0,           // (B, R)
                   const at::Tensor& c0,           // (B, H)
                   const at::Tensor& w_ih,         // (4H, I)
                   const at::Tensor& w_hh,         // (4H, R)
                   const std::optional<at::Tensor>& b_ih,  // (4H)
                   const std::optional<at::Tensor>& b_hh,  // (4H)
                   const std::optional<at::Tensor>& w_hr,  // (P, H)
                   bool reverse, bool save_for_backward, const StepKernels& kernels);

// Returns (grad_input (N, I), grad_h0 (B, R), grad_c0 (B, H), grad_w_ih (4H, I),
// grad_w_hh (4H, R), grad_bias (4H), grad_w_hr (P, H) or empty (0,)). grad_bias is the gradient
// of b_ih and of b_hh alike.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
lstm_layer_backward(const at::Tensor& grad_output,  // (N, R)
                    const at::Tensor& grad_h_n,     // (B, R)
                    const at::Tensor& grad_c_n,     // (B, H)
                    const at::Tensor& input,        // (N, I)
                    const at::Tensor& batch_sizes,  // (T,)
                    const at::Tensor& h0,           // (B, R)
                    const at::Tensor& c0,           // (B, H)
                    const at::Tensor& w_ih,         // (4H, I)
                    const at::Tensor& w_hh,         // (4H, R)
                    const std::optional<at::Tensor>& w_hr,  // (P, H)
                    const at::Tensor& output,       // (N, R) forward's output
                    const at::Tensor& gates,        // (N, 4H) forward's saved activations
                    const at::Tensor& cells,        // (N, H)
                    const at::Tensor& hidden,       // (N, H) with w_hr, else empty
                    bool reverse, const StepKernels& kernels);

// The operators' implementations for one dispatch key, in the signatures of their schemas
// (ops.cpp): the driver above with that device's step kernels, run under a DeviceGuard built
// from the input (which makes the input's device current, where the device needs that).
template <const StepKernels& kKernels, typename DeviceGuard>
struct LayerOperators {
  static std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
  forward(const at::Tensor& input, const at::Tensor& batch_sizes, const at::Tensor& h0,
          const at::Tensor& c0, const at::Tensor& w_ih, const at::Tensor& w_hh,
          const std::optional<at::Tensor>& b_ih, const std::optional<at::Tensor>& b_hh,
          const std::optional<at::Tensor>& w_hr, bool reverse, bool save_for_backward) {
    const DeviceGuard device_guard(input);
    return lstm_layer_forward(input, batch_sizes, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, reverse,
                              save_for_backward, kKernels);
  }

  static std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                    at::Tensor>
  backward(const at::Tensor& grad_output, const at::Tensor& grad_h_n, const at::Tensor& grad_c_n,
           const at::Tensor& input, const at::Tensor& batch_sizes, const at::Tensor& h0,
           const at::Tensor& c0, const at::Tensor& w_ih, const at::Tensor& w_hh,
           const std::optional<at::Tensor>& w_hr, const at::Tensor& output,
           const at::Tensor& gates, const at::Tensor& cells, const at::Tensor& hidden,
           bool reverse) {
    const DeviceGuard device_guard(input);
    return lstm_layer_backward(grad_output, grad_h_n, grad_c_n, input, batch_sizes, h0, c0, w_ih,
                               w_hh, w_hr, output, gates, cells, hidden, reverse, kKernels);
  }
};

}  // namespace lstm_ext

// The LSTM layer driver: the GEMMs and the step loop, shared by the CPU and CUDA operators.
//
// Sequences are in PyTorch's packed, time-major layout: the rows of step t are the first
// batch_sizes[t] sequences (batch_sizes non-increasing), stored one step after another. A padded
// (T, B) batch is the special case batch_sizes = [B] * T. Notation: N = sum(batch_sizes) rows,
// B = batch_sizes[0], I = input size, H = hidden size, R = P (projection size) when w_hr is given,
// else H.
//
// A device supplies a `Backend`: at least the fused pointwise pass of a step (the CUDA kernels in
// cuda/), and optionally whole float32 layers with the policy that plans them (the CPU, cpu/).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <c10/util/Optional.h>

#include <tuple>

#include "core/lstm_math.h"
#include "core/step_params.h"

namespace lstm_ext {

// Where one step reads and writes, in the forward pass's processing order: the driver's
// per-step loops and a backend's whole-layer kernels walk the same list (built once by the
// driver; backward walks it from the end, with every buffer holding all N rows).
struct StepLayout {
  int64_t rows;           // batch_sizes[t]
  int64_t carried_rows;   // rows [0, carried_rows) continue from the step before; the others
                          // start from h0 and c0 (same row index)
  int64_t finished_from;  // rows [finished_from, rows) end their sequence here (-> h_n, c_n)
  int64_t row;            // first packed row of the step (input, output)
  int64_t prev_row;       // first packed row of the step before: its output rows are h_{t-1}
  int64_t gate_row;       // first row of the step in the gates buffer
  int64_t cell_row;       // ... in the cells buffer
  int64_t prev_cell_row;  // ... of the step before, in the cells buffer
  int64_t hidden_row;     // ... in the pre-projection hidden buffer (the output without w_hr)
  // Before this step, the input projection of packed rows [project_row, project_row +
  // project_rows) into the gates buffer from row project_gate_row: the rows of this step and
  // the next project_steps - 1 ones (project_steps 0: none).
  int64_t project_row;
  int64_t project_rows;
  int64_t project_gate_row;
  int64_t project_steps;
};

// A whole forward layer, for backends that run its step loop in one parallel region. Buffers
// are indexed by the rows of `steps`; R = P with w_hr, else H. The kernel writes the transposed
// weights its GEMMs read into the given scratch buffers itself (each thread the columns it
// reads, in the layout its GEMMs stream best), which costs less than a copy before it.
template <typename scalar_t>
struct LayerForwardParams {
  const StepLayout* steps;
  int64_t num_steps;
  const scalar_t* input;  // (N, I) contiguous
  const scalar_t* w_ih;   // (4H, I) contiguous, or nullptr when the gates hold the input
                          // projection already (no step has project_rows)
  const scalar_t* bias;   // (4H) b_ih + b_hh, which the kernel adds to the gates (they never
                          // hold it), or nullptr: no bias
  const scalar_t* w_hh;   // (4H, R) contiguous
  // (4H, R) contiguous: W_hh in bfloat16 where the layer is a bfloat16 one run in float32 (w_hh
  // is then this widened), or nullptr. Read in its place where the kernel reads W_hh as stored
  // (steps of a few rows, whose time goes into streaming W_hh): half the bytes, same values.
  const c10::BFloat16* w_hh_bfloat16;
  const scalar_t* w_hr;    // (P, H) contiguous, or nullptr without projection
  const scalar_t* h0;      // (B, R)
  const scalar_t* c0;      // (B, H)
  scalar_t* w_ih_t;        // I * 4H scratch floats for W_ih transposed
  scalar_t* w_hh_t;        // R * 4H scratch floats for W_hh transposed
  scalar_t* w_hr_t;        // H * P scratch floats for W_hr transposed, or nullptr
  scalar_t* gates;         // (gate rows, 4H): pre-activations in, activations out
  scalar_t* cells;         // (cell rows, H)
  scalar_t* hidden;        // (hidden rows, H) pre-projection h_t; the output without w_hr
  scalar_t* output;        // (N, R)
  scalar_t* h_n;           // (B, R)
  scalar_t* c_n;           // (B, H)
  int64_t input_size;      // I
  int64_t hidden_size;     // H
  int64_t recurrent_size;  // R
};

// A whole backward layer's step loop, for backends that run it in one parallel region; the
// input and weight gradients are GEMMs over all rows after it, run by the driver. Buffers hold
// all N rows; R = P with w_hr, else H.
template <typename scalar_t>
struct LayerBackwardParams {
  const StepLayout* steps;      // in forward processing order; walked from the end
  int64_t num_steps;
  const scalar_t* grad_output;  // (N, R) contiguous
  const scalar_t* gates;        // (N, 4H) saved activations
  const scalar_t* cells;        // (N, H) saved c_t
  const scalar_t* c0;           // (B, H)
  const scalar_t* w_hh;         // (4H, R) contiguous
  const scalar_t* w_hr;         // (P, H) contiguous, or nullptr without projection
  scalar_t* grad_gates;         // (N, 4H) out
  scalar_t* grad_projected;     // (N, P) out: dL/d(projected h_t), or nullptr
  scalar_t* grad_hidden;        // (B, H) scratch: dL/dh_t before the projection, or nullptr
  scalar_t* grad_hidden_state;  // (B, R) in: dL/dh_n; out: dL/dh0
  scalar_t* grad_cell_state;    // (B, H) in: dL/dc_n; out: dL/dc0
  scalar_t* w_hh_columns;       // 4H * R scratch floats: each thread's columns of W_hh
  scalar_t* w_hr_columns;       // P * H scratch floats for W_hr's, or nullptr
  int64_t hidden_size;          // H
  int64_t recurrent_size;       // R
};

// C (M, N) = A (M, K) B (K, N), float32, row-major with the given row strides. With
// transpose_a, A is stored transposed, (K, M), and may serve a second product, C2 (M, N2) =
// A^T B2 (K, N2), and give its column sums (M): dW_ih = dG^T x, dW_hh = dG^T h_{t-1} and db in
// one pass over the gate gradients dG (N, 4H).
struct GemmParams {
  int64_t M = 0, N = 0, K = 0;
  const float* A = nullptr;
  int64_t lda = 0;
  bool transpose_a = false;
  const float* B = nullptr;
  int64_t ldb = 0;
  float* C = nullptr;
  int64_t ldc = 0;
  int64_t N2 = 0;  // 0: no second product
  const float* B2 = nullptr;
  int64_t ldb2 = 0;
  float* C2 = nullptr;
  int64_t ldc2 = 0;
  float* a_column_sums = nullptr;  // (M), or nullptr; only with transpose_a
};

// A backend's float32 GEMM (C = A B, or C = A^T B with its second product and column sums).
using GemmFloat = void (*)(const GemmParams&);

// One fused pointwise pass of a step, per storage type: all a device must supply.
struct StepKernels {
  void (*forward_float)(const ForwardStepParams<float>&);
  void (*forward_double)(const ForwardStepParams<double>&);
  void (*forward_half)(const ForwardStepParams<c10::Half>&);
  void (*forward_bfloat16)(const ForwardStepParams<c10::BFloat16>&);
  void (*backward_float)(const BackwardStepParams<float>&);
  void (*backward_double)(const BackwardStepParams<double>&);
  void (*backward_half)(const BackwardStepParams<c10::Half>&);
  void (*backward_bfloat16)(const BackwardStepParams<c10::BFloat16>&);
};

// A backend's whole float32 layers: the step loops of a layer in one parallel region (the CPU
// path, where raw GEMM kernels in one region beat per-step ATen calls at every batch size), or
// in one persistent kernel (CUDA, where the recurrent weights fit on chip).
struct FloatLayerKernels {
  // A whole forward layer (the input projections of the chunks that `steps` name, every step,
  // the output projection); the driver only allocates and lays out its buffers.
  void (*forward)(const LayerForwardParams<float>&);
  // Null: the backward's step loop runs one step at a time (ATen and the step kernels).
  void (*backward)(const LayerBackwardParams<float>&);
  // Whether `forward` takes a layer of N rows, H, R and a projection or not, asked per call
  // (the answer may depend on the device and the environment); null: every float32 layer.
  bool (*takes_forward)(int64_t rows, int64_t hidden_size, int64_t recurrent_size,
                        bool has_projection) = nullptr;
  // Whether 16-bit layers run through these kernels widened to float32 (widening.h).
  bool widens_16bit_layers = true;
};

// How the driver plans a layer for a backend; each hook is asked per call (the answers depend on
// the sizes, the processor and the environment).
struct LayerPolicy {
  // The GEMM of the backward's gradients after its step loop (input, weights, bias) for products
  // of about `multiply_adds` in all: the backend's, or null for ATen's mm.
  GemmFloat (*gemm_float)(int64_t multiply_adds);
  // Rows of gates per input-projection chunk for a layer of these sizes and element size: a
  // chunk that fits the caches is read back from them by its steps.
  int64_t (*projection_chunk_rows)(int64_t input_size, int64_t hidden_size, int64_t element_size);
  // Whether the driver runs a float32 layer's input projection (without the biases, which the
  // layer kernel adds) through ATen, one GEMM over all N rows, before the layer kernel, instead
  // of the kernel chunk by chunk. Asked with N, the largest step's rows, I, H and whether the gates
  // are saved for backward (all N rows are kept then anyway).
  bool (*projects_input_first)(int64_t rows, int64_t max_step_rows, int64_t input_size,
                               int64_t hidden_size, bool save_for_backward);
};

// What the driver runs a layer with on one device.
struct Backend {
  StepKernels steps;
  // Null: the driver runs float32 layers step by step, its GEMMs through ATen, the input
  // projection as one GEMM over the whole layer.
  const FloatLayerKernels* float_layer;
  // Null: ATen's GEMMs after the backward loop, one input-projection GEMM per layer, and float32
  // layers never projected first.
  const LayerPolicy* policy;
  // An uninitialised tensor for the operators' outputs and scratch (at::empty, or a cache).
  at::Tensor (*empty)(at::IntArrayRef sizes, const at::TensorOptions& options);
};

// Returns (output (N, R), h_n (B, R), c_n (B, H), gates (N, 4H), cells (N, H), hidden (N, H)).
// gates, cells and hidden (the pre-projection h, only with w_hr) are what backward needs; they
// are empty (0,) tensors unless save_for_backward.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
lstm_layer_forward(const at::Tensor& input,                // (N, I)
                   const at::Tensor& batch_sizes,          // (T,) int64 on the CPU
                   const at::Tensor& h0,                   // (B, R)
                   const at::Tensor& c0,                   // (B, H)
                   const at::Tensor& w_ih,                 // (4H, I)
                   const at::Tensor& w_hh,                 // (4H, R)
                   const std::optional<at::Tensor>& b_ih,  // (4H)
                   const std::optional<at::Tensor>& b_hh,  // (4H)
                   const std::optional<at::Tensor>& w_hr,  // (P, H)
                   bool reverse, bool save_for_backward, const Backend& backend);

// Returns (grad_input (N, I), grad_h0 (B, R), grad_c0 (B, H), grad_w_ih (4H, I),
// grad_w_hh (4H, R), grad_bias (4H), grad_w_hr (P, H) or empty (0,)). grad_bias is the gradient
// of b_ih and of b_hh alike. grad_input is empty (0,) unless grad_input_mask, the weight and
// bias gradients unless grad_weights_mask.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
lstm_layer_backward(const at::Tensor& grad_output,          // (N, R)
                    const at::Tensor& grad_h_n,             // (B, R)
                    const at::Tensor& grad_c_n,             // (B, H)
                    const at::Tensor& input,                // (N, I)
                    const at::Tensor& batch_sizes,          // (T,)
                    const at::Tensor& h0,                   // (B, R)
                    const at::Tensor& c0,                   // (B, H)
                    const at::Tensor& w_ih,                 // (4H, I)
                    const at::Tensor& w_hh,                 // (4H, R)
                    const std::optional<at::Tensor>& w_hr,  // (P, H)
                    const at::Tensor& output,               // (N, R) forward's output
                    const at::Tensor& gates,                // (N, 4H) forward's saved activations
                    const at::Tensor& cells,                // (N, H)
                    const at::Tensor& hidden,               // (N, H) with w_hr, else empty
                    bool reverse, bool grad_input_mask, bool grad_weights_mask,
                    const Backend& backend);

// The operators' implementations for one dispatch key, in the signatures of their schemas
// (ops.cpp): the driver above with that device's step kernels, run under a DeviceGuard built
// from the input (which makes the input's device current, where the device needs that).
template <const Backend& kBackend, typename DeviceGuard>
struct LayerOperators {
  static std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
  forward(const at::Tensor& input, const at::Tensor& batch_sizes, const at::Tensor& h0,
          const at::Tensor& c0, const at::Tensor& w_ih, const at::Tensor& w_hh,
          const std::optional<at::Tensor>& b_ih, const std::optional<at::Tensor>& b_hh,
          const std::optional<at::Tensor>& w_hr, bool reverse, bool save_for_backward) {
    const DeviceGuard device_guard(input);
    return lstm_layer_forward(input, batch_sizes, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, reverse,
                              save_for_backward, kBackend);
  }

  static std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                    at::Tensor>
  backward(const at::Tensor& grad_output, const at::Tensor& grad_h_n, const at::Tensor& grad_c_n,
           const at::Tensor& input, const at::Tensor& batch_sizes, const at::Tensor& h0,
           const at::Tensor& c0, const at::Tensor& w_ih, const at::Tensor& w_hh,
           const std::optional<at::Tensor>& w_hr, const at::Tensor& output, const at::Tensor& gates,
           const at::Tensor& cells, const at::Tensor& hidden, bool reverse, bool grad_input_mask,
           bool grad_weights_mask) {
    const DeviceGuard device_guard(input);
    return lstm_layer_backward(grad_output, grad_h_n, grad_c_n, input, batch_sizes, h0, c0, w_ih,
                               w_hh, w_hr, output, gates, cells, hidden, reverse, grad_input_mask,
                               grad_weights_mask, kBackend);
  }
};

}  // namespace lstm_ext

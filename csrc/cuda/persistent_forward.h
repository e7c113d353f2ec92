// The persistent forward kernel (persistent_forward.cu): a float32 layer's steps in one
// cooperative launch, each CTA keeping its slice of the recurrent weights in shared memory for
// all of them (see persistent_plan.h for who owns what). Declared without torch types, like the
// step kernels, so that the .cu file compiles against light headers only.
#pragma once

#include <cstdint>

#include "cuda/persistent_plan.h"

namespace lstm_ext {
namespace cuda {

// A StepLayout (core/lstm_layer.h) in 32-bit fields of the same names: forward_step_params
// (core/step_params.h) builds a step's params from either. The caller checks that the layer's
// rows fit 32 bits.
struct PersistentStep {
  int32_t rows;
  int32_t carried_rows;
  int32_t finished_from;
  int32_t row;
  int32_t prev_row;
  int32_t gate_row;
  int32_t cell_row;
  int32_t prev_cell_row;
  int32_t hidden_row;
};

// Steps per launch. They travel in the kernel's parameters, which every launch and CUDA graph
// takes up to 4 KB of: a copy to the device would be a graph node reading host memory that may
// be gone by the time the graph is replayed. A longer layer runs as several launches.
constexpr int kPersistentStepsPerLaunch = 100;

struct PersistentSteps {
  int32_t count;
  PersistentStep step[kPersistentStepsPerLaunch];
};

// One layer's buffers (laid out as the steps say) and sizes; H hidden units, R = P with w_hr,
// else H. The gates hold the input projection x W_ih^T of every row, without the bias.
struct PersistentForwardParams {
  float* gates;       // (gate rows, 4H): pre-activations in, activations out
  float* cells;       // (cell rows, H)
  float* hidden;      // (hidden rows, H): pre-projection h_t; the output itself without w_hr
  float* output;      // (N, R)
  float* h_n;         // (B, R)
  float* c_n;         // (B, H)
  const float* h0;    // (B, R)
  const float* c0;    // (B, H)
  const float* bias;  // (4H) b_ih + b_hh, or nullptr
  const float* w_hh;  // (4H, R) contiguous
  const float* w_hr;  // (P, H) contiguous, or nullptr
  int64_t hidden_size;
  int64_t recurrent_size;
  PersistentPlan plan;  // for this layer on the current device; it fits
};

// The current device's budget for the kernel (persistent_plan.h), queried once per device. The
// first query also lets the kernel use all the shared memory a block may opt into.
DeviceBudget persistent_forward_budget();

// Enqueues `steps` of the layer, one cooperative launch on the current stream.
void launch_persistent_forward(const PersistentForwardParams& layer, const PersistentSteps& steps);

}  // namespace cuda
}  // namespace lstm_ext

// The persistent forward kernel as the CUDA backend's float32 forward layer: when it runs (the
// plan and the environment), its launches over the driver's steps, and a count of them that
// tests read to know which path ran.
#include "cuda/persistent_layer.h"

#include <c10/util/Exception.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <vector>

#include "cuda/persistent_forward.h"

namespace lstm_ext {
namespace cuda {
namespace {

// Persistent launches since the extension was loaded (a captured launch counts once, when it is
// captured, not at each replay).
std::atomic<int64_t> launch_count{0};

bool persistent_enabled() {
  const char* setting = std::getenv("LSTM_EXT_CUDA_PERSISTENT");
  return setting != nullptr && std::strcmp(setting, "1") == 0;
}

PersistentPlan plan_on_current_device(int64_t hidden_size, int64_t recurrent_size,
                                      bool has_projection) {
  const LayerShape shape{hidden_size, recurrent_size, has_projection ? recurrent_size : 0,
                         static_cast<int64_t>(sizeof(float))};
  return plan_persistent_layer(shape, persistent_forward_budget());
}

PersistentStep narrowed(const StepLayout& step) {
  const auto narrow = [](int64_t value) { return static_cast<int32_t>(value); };
  return {narrow(step.rows),     narrow(step.carried_rows),  narrow(step.finished_from),
          narrow(step.row),      narrow(step.prev_row),      narrow(step.gate_row),
          narrow(step.cell_row), narrow(step.prev_cell_row), narrow(step.hidden_row)};
}

PersistentForwardParams kernel_params(const LayerForwardParams<float>& params) {
  PersistentForwardParams layer;
  layer.gates = params.gates;
  layer.cells = params.cells;
  layer.hidden = params.hidden;
  layer.output = params.output;
  layer.h_n = params.h_n;
  layer.c_n = params.c_n;
  layer.h0 = params.h0;
  layer.c0 = params.c0;
  layer.bias = params.bias;
  layer.w_hh = params.w_hh;
  layer.w_hr = params.w_hr;
  layer.hidden_size = params.hidden_size;
  layer.recurrent_size = params.recurrent_size;
  layer.plan =
      plan_on_current_device(params.hidden_size, params.recurrent_size, params.w_hr != nullptr);
  return layer;
}

int64_t persistent_launches() { return launch_count.load(std::memory_order_relaxed); }

// The current device's budget in cuda_persistent_plan's argument order (after the layer's).
std::vector<int64_t> persistent_budget() {
  const DeviceBudget budget = persistent_forward_budget();
  return {budget.multiprocessors,
          budget.shared_bytes_per_multiprocessor,
          budget.shared_bytes_per_block,
          budget.reserved_shared_bytes_per_block,
          budget.registers_per_multiprocessor,
          budget.registers_per_thread};
}

}  // namespace

bool takes_persistent_forward(int64_t rows, int64_t hidden_size, int64_t recurrent_size,
                              bool has_projection) {
  // The kernel's steps carry 32-bit row indices.
  return persistent_enabled() && rows > 0 && rows <= std::numeric_limits<int32_t>::max() &&
         plan_on_current_device(hidden_size, recurrent_size, has_projection).fits();
}

void persistent_forward(const LayerForwardParams<float>& params) {
  TORCH_INTERNAL_ASSERT(params.w_ih == nullptr,
                        "the persistent kernel reads the input projection from the gates");
  const PersistentForwardParams layer = kernel_params(params);
  TORCH_INTERNAL_ASSERT(layer.plan.fits(), "the persistent kernel got a layer it does not fit");
  PersistentSteps steps;
  for (int64_t first = 0; first < params.num_steps; first += kPersistentStepsPerLaunch) {
    steps.count = static_cast<int32_t>(
        std::min<int64_t>(kPersistentStepsPerLaunch, params.num_steps - first));
    for (int32_t k = 0; k < steps.count; ++k) steps.step[k] = narrowed(params.steps[first + k]);
    launch_persistent_forward(layer, steps);
    launch_count.fetch_add(1, std::memory_order_relaxed);
  }
}

}  // namespace cuda

TORCH_LIBRARY_FRAGMENT(lstm_ext, m) {
  // Persistent forward launches so far: tests read it before and after a call to know whether
  // the persistent kernel ran.
  m.def("cuda_persistent_launches() -> int", &cuda::persistent_launches);
  // The current device's figures that the persistent kernel's plan takes
  // (cuda_persistent_plan's arguments after the layer's): tests find the device's edge with it.
  m.def("cuda_persistent_budget() -> int[]", &cuda::persistent_budget);
}

}  // namespace lstm_ext

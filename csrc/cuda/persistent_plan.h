// How the persistent forward kernel (persistent_forward.cu) splits a layer over a device's
// multiprocessors, and whether the layer fits on chip at all: the kernel's sizing rules, in one
// place. Torch-free and CUDA-free, so that CPU builds plan too: tests/test_cuda_plan.py checks
// these rules without a GPU, through torch.ops.lstm_ext.cuda_persistent_plan.
//
// At most one CTA per multiprocessor. CTA c owns hidden units [c U, (c + 1) U) (U = units per
// CTA): their four gate rows of W_hh, R values each; with a projection also W_hr's rows
// [c C, (c + 1) C) (C = columns per CTA, of the P output columns), H values each. It keeps them
// in shared memory for all steps, beside a staging buffer of `staged_rows` rows of h_{t-1}
// (R wide) or of the step's hidden units (H wide):
//   shared bytes = (4 U R + C H + staged_rows max(R, H)) x element size,
// within min(shared memory per block, shared memory per multiprocessor - its reserve per block).
#pragma once

#include <algorithm>
#include <cstdint>

#if defined(__CUDACC__)
#define LSTM_EXT_PLAN_HOST_DEVICE __host__ __device__ inline
#else
#define LSTM_EXT_PLAN_HOST_DEVICE inline
#endif

namespace lstm_ext {
namespace cuda {

// Threads per CTA: 8 warps, each working on a unit's four gates (or four projection columns)
// against four rows at a time.
constexpr int64_t kPersistentThreads = 256;

// Rows of h staged in shared memory at a time, the most that fits first: each staged tile costs
// two block barriers, so more rows per tile mean fewer of them in a step of many rows.
constexpr int64_t kStagedRowChoices[] = {32, 16, 8, 4};

// Sizes beyond which the plan answers "does not fit" without computing (no single weight row of
// them fits a block's shared memory); they keep its products far from overflow.
constexpr int64_t kLargestPlannedSize = int64_t(1) << 24;

// What a device offers one persistent kernel (cudaDeviceGetAttribute's figures).
struct DeviceBudget {
  int64_t multiprocessors;                  // cudaDevAttrMultiProcessorCount
  int64_t shared_bytes_per_multiprocessor;  // cudaDevAttrMaxSharedMemoryPerMultiprocessor
  int64_t shared_bytes_per_block;           // opt-in maximum less the kernel's static bytes
  int64_t reserved_shared_bytes_per_block;  // cudaDevAttrReservedSharedMemoryPerBlock
  int64_t registers_per_multiprocessor;     // cudaDevAttrMaxRegistersPerMultiprocessor
  int64_t registers_per_thread;             // the compiled kernel's (cudaFuncAttributes)
};

struct LayerShape {
  int64_t hidden_size;      // H
  int64_t recurrent_size;   // R: P with a projection, else H
  int64_t projection_size;  // P, or 0 without a projection
  int64_t element_size;     // bytes per weight (4 for float32)
};

// Why a layer does not fit (kFits when it does); the values are part of the operator's answer.
enum class PlanVerdict : int64_t {
  kFits = 0,
  kSharedMemory = 1,       // the CTAs' weight slices and staging rows exceed shared memory
  kRegisters = 2,          // a CTA's threads need more registers than a multiprocessor has
  kNoMultiprocessors = 3,  // the device runs no cooperative launch (or reports no SMs)
  kEmptyLayer = 4,         // H or R below 1: nothing to plan
};

struct PersistentPlan {
  PlanVerdict verdict;
  int64_t ctas;             // grid size, at most the multiprocessor count
  int64_t threads;          // per CTA
  int64_t units_per_cta;    // U; the last CTA may own fewer
  int64_t columns_per_cta;  // C; later CTAs may own fewer or none
  int64_t staged_rows;      // rows of h staged per tile
  int64_t shared_bytes;     // dynamic shared memory per CTA (what it needs, when it does not fit)

  bool fits() const { return verdict == PlanVerdict::kFits; }
};

// [begin, end) of what CTA `cta` owns of `total` items dealt in runs of `per_cta`.
struct OwnedRange {
  int64_t begin;
  int64_t end;
};

LSTM_EXT_PLAN_HOST_DEVICE OwnedRange owned_range(int64_t total, int64_t per_cta, int64_t cta) {
  const int64_t begin = cta * per_cta < total ? cta * per_cta : total;
  return {begin, begin + per_cta < total ? begin + per_cta : total};
}

LSTM_EXT_PLAN_HOST_DEVICE int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Shared memory of a CTA that owns `units` hidden units and `columns` projection columns.
inline int64_t cta_shared_bytes(const LayerShape& shape, int64_t units, int64_t columns,
                                int64_t staged_rows) {
  const int64_t H = shape.hidden_size;
  const int64_t R = shape.recurrent_size;
  return (4 * units * R + columns * H + staged_rows * std::max(R, H)) * shape.element_size;
}

inline int64_t shared_budget(const DeviceBudget& device) {
  return std::min(device.shared_bytes_per_block,
                  device.shared_bytes_per_multiprocessor - device.reserved_shared_bytes_per_block);
}

// The plan of a layer on a device: hidden units dealt evenly over as many CTAs as there are
// multiprocessors (but no empty CTA), the projection's columns over the same CTAs, and the
// largest staging tile that fits beside them.
inline PersistentPlan plan_persistent_layer(const LayerShape& shape, const DeviceBudget& device) {
  PersistentPlan plan{PlanVerdict::kEmptyLayer, 0, kPersistentThreads, 0, 0, 0, 0};
  if (shape.hidden_size < 1 || shape.recurrent_size < 1) return plan;
  if (device.multiprocessors < 1) {
    plan.verdict = PlanVerdict::kNoMultiprocessors;
    return plan;
  }
  if (std::max({shape.hidden_size, shape.recurrent_size, shape.projection_size}) >
      kLargestPlannedSize) {
    plan.verdict = PlanVerdict::kSharedMemory;
    return plan;
  }
  plan.units_per_cta =
      ceil_div(shape.hidden_size, std::min(device.multiprocessors, shape.hidden_size));
  plan.ctas = ceil_div(shape.hidden_size, plan.units_per_cta);
  plan.columns_per_cta = ceil_div(shape.projection_size, plan.ctas);
  if (plan.threads * device.registers_per_thread > device.registers_per_multiprocessor) {
    plan.verdict = PlanVerdict::kRegisters;
    return plan;
  }
  plan.verdict = PlanVerdict::kSharedMemory;
  for (const int64_t rows : kStagedRowChoices) {
    plan.staged_rows = rows;
    plan.shared_bytes = cta_shared_bytes(shape, plan.units_per_cta, plan.columns_per_cta, rows);
    if (plan.shared_bytes <= shared_budget(device)) {
      plan.verdict = PlanVerdict::kFits;
      break;
    }
  }
  return plan;
}

}  // namespace cuda
}  // namespace lstm_ext

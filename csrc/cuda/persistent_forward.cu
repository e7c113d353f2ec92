// The persistent forward kernel: every step of a float32 layer in one cooperative launch (see
// persistent_forward.h; persistent_plan.h for who owns what). Per step, each CTA stages h_{t-1}
// in shared memory a tile of rows at a time, multiplies it by its hidden units' gate rows of
// W_hh (kept in shared memory since the launch began), adds the products to the input
// projection in the gates and runs the cell through lstm_math.h, then meets the other CTAs at a
// grid-wide barrier; with a projection, a second phase multiplies the step's hidden units by
// the CTA's rows of W_hr, before a second barrier. Sums run in float32 FMAs in a fixed order
// (lanes over columns, then a butterfly over the lanes): no atomics, the same bits every run.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAStream.h>
#include <cooperative_groups.h>
#include <cuda_runtime.h>

#include <array>
#include <mutex>
#include <optional>

#include "core/lstm_math.h"
#include "core/step_params.h"
#include "cuda/persistent_forward.h"

namespace lstm_ext {
namespace cuda {
namespace {

namespace cg = cooperative_groups;

constexpr int kWarpSize = 32;
constexpr int kWarps = static_cast<int>(kPersistentThreads) / kWarpSize;
constexpr unsigned kFullWarp = 0xffffffffu;
// A warp's item: kTile weight rows (a hidden unit's four gates, or four projection columns)
// against kTile staged rows, kTile x kTile sums in each lane's registers.
constexpr int kTile = 4;

// The classic limit on a launch's parameters, which every CUDA version and graph accepts.
static_assert(sizeof(PersistentForwardParams) + sizeof(PersistentSteps) <= 4096,
              "the persistent kernel's parameters exceed 4 KB: take fewer steps per launch");

__device__ int64_t smaller(int64_t a, int64_t b) { return a < b ? a : b; }

// What one CTA owns, and where its slices lie in its shared memory.
struct CtaSlice {
  int64_t unit_begin, units;      // hidden units
  int64_t column_begin, columns;  // projection columns
  float* w_hh;    // (4 units, R): unit j's gate rows i, f, g, o at rows 4j .. 4j + 3
  float* w_hr;    // (columns, H)
  float* staged;  // (plan.staged_rows, max(R, H))
};

__device__ CtaSlice cta_slice(const PersistentForwardParams& layer, float* shared) {
  const PersistentPlan& plan = layer.plan;
  const int64_t H = layer.hidden_size;
  const int64_t R = layer.recurrent_size;
  const int64_t projection_size = layer.w_hr != nullptr ? R : 0;
  const OwnedRange units = owned_range(H, plan.units_per_cta, blockIdx.x);
  const OwnedRange columns = owned_range(projection_size, plan.columns_per_cta, blockIdx.x);
  CtaSlice cta;
  cta.unit_begin = units.begin;
  cta.units = units.end - units.begin;
  cta.column_begin = columns.begin;
  cta.columns = columns.end - columns.begin;
  cta.w_hh = shared;
  cta.w_hr = cta.w_hh + kTile * plan.units_per_cta * R;
  cta.staged = cta.w_hr + plan.columns_per_cta * H;
  return cta;
}

// Loads in flight per lane when staging rows: L2's latency is paid once per batch of them, and
// a step stages all of h_{t-1} (at B = 64, R = 512 a lane's share is 64 values per tile).
constexpr int kLoadsInFlight = 16;
constexpr int64_t kChunkWidth = kWarpSize * kLoadsInFlight;

// Copies `rows` rows of `width` floats, row r from source_row(r), into `shared` (rows, width):
// warps take chunks of kChunkWidth columns of a row, each lane kLoadsInFlight of them, loaded
// before any is stored. Loads go through L2 only: rows that other CTAs wrote during this launch
// may be stale in this multiprocessor's L1.
template <typename SourceRow>
__device__ void load_rows(float* shared, int64_t rows, int64_t width, SourceRow source_row) {
  const int warp = threadIdx.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  const int64_t chunks_per_row = ceil_div(width, kChunkWidth);
  for (int64_t item = warp; item < rows * chunks_per_row; item += kWarps) {
    const int64_t r = item / chunks_per_row;
    const int64_t first_column = (item % chunks_per_row) * kChunkWidth + lane;
    const float* source = source_row(r);
    float values[kLoadsInFlight];
    // Past the row's end a lane loads its last value again, unpredicated: predicated loads
    // would be issued a few at a time, as predicate registers allow.
#pragma unroll
    for (int i = 0; i < kLoadsInFlight; ++i) {
      const int64_t k = first_column + i * kWarpSize;
      values[i] = __ldcg(source + (k < width ? k : width - 1));
    }
#pragma unroll
    for (int i = 0; i < kLoadsInFlight; ++i) {
      const int64_t k = first_column + i * kWarpSize;
      if (k < width) shared[r * width + k] = values[i];
    }
  }
}

// sums[i][j] = weights row i . data row j over `width` columns, for i < weight_rows and
// j < data_rows (rows of stride `width`); rows past those read row 0 again, their sums unused.
// Each lane sums the columns lane, lane + 32, ...; a butterfly then leaves every lane every sum
// (the same bits in every lane: float addition commutes).
__device__ void warp_dot_tile(const float* weights, int64_t weight_rows, const float* data,
                              int64_t data_rows, int64_t width, float (&sums)[kTile][kTile]) {
  const int lane = threadIdx.x % kWarpSize;
  const float* weight_row[kTile];
  const float* data_row[kTile];
#pragma unroll
  for (int i = 0; i < kTile; ++i) {
    weight_row[i] = weights + (i < weight_rows ? i : 0) * width;
    data_row[i] = data + (i < data_rows ? i : 0) * width;
#pragma unroll
    for (int j = 0; j < kTile; ++j) sums[i][j] = 0.0f;
  }
  for (int64_t k = lane; k < width; k += kWarpSize) {
    float w[kTile];
    float d[kTile];
#pragma unroll
    for (int i = 0; i < kTile; ++i) {
      w[i] = weight_row[i][k];
      d[i] = data_row[i][k];
    }
#pragma unroll
    for (int i = 0; i < kTile; ++i) {
#pragma unroll
      for (int j = 0; j < kTile; ++j) sums[i][j] = fmaf(w[i], d[j], sums[i][j]);
    }
  }
#pragma unroll
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
#pragma unroll
    for (int i = 0; i < kTile; ++i) {
#pragma unroll
      for (int j = 0; j < kTile; ++j) sums[i][j] += __shfl_xor_sync(kFullWarp, sums[i][j], offset);
    }
  }
}

// sums[i][j] for an (i, j) known only at run time, without indexing the register array (which
// would move it to local memory).
__device__ float tile_entry(const float (&sums)[kTile][kTile], int i, int j) {
  float entry = 0.0f;
#pragma unroll
  for (int a = 0; a < kTile; ++a) {
#pragma unroll
    for (int b = 0; b < kTile; ++b) entry = (a == i && b == j) ? sums[a][b] : entry;
  }
  return entry;
}

// The cell of (row, unit) after its recurrent sums, column `lane` of `sums`; the final states of
// the rows that end here.
__device__ void run_cell(const PersistentForwardParams& layer, const PersistentStep& step,
                         const ForwardStepParams<float>& cell, int64_t row, int64_t unit,
                         const float (&sums)[kTile][kTile], int lane) {
  const int64_t H = layer.hidden_size;
  float recurrent[kTile];
#pragma unroll
  for (int gate = 0; gate < kTile; ++gate) recurrent[gate] = tile_entry(sums, gate, lane);
  add_recurrent_element<float, float>(cell, row, unit, recurrent);
  lstm_forward_element<float, float>(cell, row, unit);
  if (row < step.finished_from) return;
  layer.c_n[row * H + unit] = cell.cell[row * H + unit];
  if (layer.w_hr == nullptr) {
    layer.h_n[row * layer.recurrent_size + unit] = cell.hidden[row * H + unit];
  }
}

// Phase one of a step: the gates and cells of the CTA's hidden units, a tile of rows at a time.
__device__ void gates_phase(const PersistentForwardParams& layer, const PersistentStep& step,
                            const CtaSlice& cta) {
  const int64_t R = layer.recurrent_size;
  const int64_t tile_capacity = layer.plan.staged_rows;
  const int warp = threadIdx.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  const ForwardStepParams<float> cell = forward_step_params(
      step, layer.hidden_size, layer.gates, layer.cells, layer.hidden, layer.c0, layer.bias);
  for (int64_t first = 0; first < step.rows; first += tile_capacity) {
    const int64_t tile_rows = smaller(tile_capacity, step.rows - first);
    load_rows(cta.staged, tile_rows, R, [&](int64_t r) {
      const int64_t row = first + r;
      return row < step.carried_rows ? layer.output + (step.prev_row + row) * R
                                     : layer.h0 + row * R;
    });
    __syncthreads();
    const int64_t row_groups = ceil_div(tile_rows, kTile);
    for (int64_t item = warp; item < cta.units * row_groups; item += kWarps) {
      const int64_t unit = item % cta.units;
      const int64_t group = item / cta.units;
      float sums[kTile][kTile];
      warp_dot_tile(cta.w_hh + unit * kTile * R, kTile, cta.staged + group * kTile * R,
                    smaller(kTile, tile_rows - group * kTile), R, sums);
      const int64_t row = first + group * kTile + lane;
      if (lane < kTile && row < first + tile_rows) {
        run_cell(layer, step, cell, row, cta.unit_begin + unit, sums, lane);
      }
    }
    __syncthreads();
  }
}

// Phase two of a step with a projection: the CTA's output columns of h_t = W_hr (o * tanh(c)).
__device__ void projection_phase(const PersistentForwardParams& layer, const PersistentStep& step,
                                 const CtaSlice& cta) {
  if (cta.columns == 0) return;
  const int64_t H = layer.hidden_size;
  const int64_t R = layer.recurrent_size;
  const int64_t tile_capacity = layer.plan.staged_rows;
  const int warp = threadIdx.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  const int64_t column_groups = ceil_div(cta.columns, kTile);
  for (int64_t first = 0; first < step.rows; first += tile_capacity) {
    const int64_t tile_rows = smaller(tile_capacity, step.rows - first);
    load_rows(cta.staged, tile_rows, H,
              [&](int64_t r) { return layer.hidden + (step.hidden_row + first + r) * H; });
    __syncthreads();
    for (int64_t item = warp; item < column_groups * ceil_div(tile_rows, kTile); item += kWarps) {
      const int64_t column_group = item % column_groups;
      const int64_t group = item / column_groups;
      float sums[kTile][kTile];
      warp_dot_tile(
          cta.w_hr + column_group * kTile * H, smaller(kTile, cta.columns - column_group * kTile),
          cta.staged + group * kTile * H, smaller(kTile, tile_rows - group * kTile), H, sums);
      const int64_t column = column_group * kTile + lane / kTile;
      const int64_t row = first + group * kTile + lane % kTile;
      if (lane < kTile * kTile && column < cta.columns && row < first + tile_rows) {
        const float value = tile_entry(sums, lane / kTile, lane % kTile);
        const int64_t output_column = cta.column_begin + column;
        layer.output[(step.row + row) * R + output_column] = value;
        if (row >= step.finished_from) layer.h_n[row * R + output_column] = value;
      }
    }
    __syncthreads();
  }
}

// The CTA's slices of W_hh and W_hr into shared memory, for all the launch's steps.
__device__ void load_weights(const PersistentForwardParams& layer, const CtaSlice& cta) {
  const int64_t H = layer.hidden_size;
  const int64_t R = layer.recurrent_size;
  load_rows(cta.w_hh, kTile * cta.units, R, [&](int64_t local_row) {
    const int64_t gate = local_row % kTile;
    const int64_t unit = cta.unit_begin + local_row / kTile;
    return layer.w_hh + (gate * H + unit) * R;
  });
  load_rows(cta.w_hr, cta.columns, H,
            [&](int64_t column) { return layer.w_hr + (cta.column_begin + column) * H; });
}

__global__ void __launch_bounds__(kPersistentThreads, 1)
    persistent_forward_kernel(const __grid_constant__ PersistentForwardParams layer,
                              const __grid_constant__ PersistentSteps steps) {
  extern __shared__ float4 shared_memory[];
  const CtaSlice cta = cta_slice(layer, reinterpret_cast<float*>(shared_memory));
  load_weights(layer, cta);
  __syncthreads();
  cg::grid_group grid = cg::this_grid();
  for (int k = 0; k < steps.count; ++k) {
    const PersistentStep& step = steps.step[k];
    gates_phase(layer, step, cta);
    if (layer.w_hr != nullptr) {
      // The projection reads every hidden unit of the step.
      grid.sync();
      projection_phase(layer, step, cta);
    }
    // The next step reads every column of this step's output.
    if (k + 1 < steps.count) grid.sync();
  }
}

int device_attribute(cudaDeviceAttr attribute, int device) {
  int value = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&value, attribute, device));
  return value;
}

DeviceBudget query_budget(int device) {
  cudaFuncAttributes kernel;
  C10_CUDA_CHECK(cudaFuncGetAttributes(&kernel, persistent_forward_kernel));
  DeviceBudget budget;
  budget.multiprocessors = device_attribute(cudaDevAttrCooperativeLaunch, device) != 0
                               ? device_attribute(cudaDevAttrMultiProcessorCount, device)
                               : 0;
  budget.shared_bytes_per_multiprocessor =
      device_attribute(cudaDevAttrMaxSharedMemoryPerMultiprocessor, device);
  budget.shared_bytes_per_block =
      device_attribute(cudaDevAttrMaxSharedMemoryPerBlockOptin, device) -
      static_cast<int64_t>(kernel.sharedSizeBytes);
  budget.reserved_shared_bytes_per_block =
      device_attribute(cudaDevAttrReservedSharedMemoryPerBlock, device);
  budget.registers_per_multiprocessor =
      device_attribute(cudaDevAttrMaxRegistersPerMultiprocessor, device);
  budget.registers_per_thread = kernel.numRegs;
  // Above 48 KB of dynamic shared memory a kernel must opt in, once per device.
  C10_CUDA_CHECK(cudaFuncSetAttribute(persistent_forward_kernel,
                                      cudaFuncAttributeMaxDynamicSharedMemorySize,
                                      static_cast<int>(budget.shared_bytes_per_block)));
  return budget;
}

}  // namespace

DeviceBudget persistent_forward_budget() {
  static std::mutex mutex;
  static std::array<std::optional<DeviceBudget>, C10_COMPILE_TIME_MAX_GPUS> budgets;
  const c10::DeviceIndex device = c10::cuda::current_device();
  const std::lock_guard<std::mutex> lock(mutex);
  if (!budgets[device].has_value()) budgets[device] = query_budget(device);
  return *budgets[device];
}

void launch_persistent_forward(const PersistentForwardParams& layer, const PersistentSteps& steps) {
  void* args[] = {const_cast<PersistentForwardParams*>(&layer),
                  const_cast<PersistentSteps*>(&steps)};
  C10_CUDA_CHECK(cudaLaunchCooperativeKernel(
      reinterpret_cast<const void*>(&persistent_forward_kernel),
      dim3(static_cast<unsigned>(layer.plan.ctas)), dim3(static_cast<unsigned>(layer.plan.threads)),
      args, static_cast<size_t>(layer.plan.shared_bytes), c10::cuda::getCurrentCUDAStream()));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace cuda
}  // namespace lstm_ext

// torch.ops.lstm_ext.cuda_persistent_plan: the persistent CUDA kernel's plan of a layer on a
// device of the given figures (cuda/persistent_plan.h), registered in every build, so that
// tests check the plan's rules without a GPU.
#include <torch/library.h>

#include <cstdint>
#include <vector>

#include "cuda/persistent_plan.h"

namespace lstm_ext {
namespace {

// [verdict, ctas, threads, units per CTA, columns per CTA, staged rows, shared bytes], then per
// CTA [unit begin, unit end, column begin, column end, shared bytes its own slices need].
std::vector<int64_t> cuda_persistent_plan(
    int64_t hidden_size, int64_t recurrent_size, int64_t projection_size, int64_t element_size,
    int64_t multiprocessors, int64_t shared_bytes_per_multiprocessor,
    int64_t shared_bytes_per_block, int64_t reserved_shared_bytes_per_block,
    int64_t registers_per_multiprocessor, int64_t registers_per_thread) {
  const cuda::LayerShape shape{hidden_size, recurrent_size, projection_size, element_size};
  const cuda::DeviceBudget device{multiprocessors,
                                  shared_bytes_per_multiprocessor,
                                  shared_bytes_per_block,
                                  reserved_shared_bytes_per_block,
                                  registers_per_multiprocessor,
                                  registers_per_thread};
  const cuda::PersistentPlan plan = cuda::plan_persistent_layer(shape, device);
  std::vector<int64_t> answer = {static_cast<int64_t>(plan.verdict),
                                 plan.ctas,
                                 plan.threads,
                                 plan.units_per_cta,
                                 plan.columns_per_cta,
                                 plan.staged_rows,
                                 plan.shared_bytes};
  for (int64_t cta = 0; cta < plan.ctas; ++cta) {
    const cuda::OwnedRange units = cuda::owned_range(hidden_size, plan.units_per_cta, cta);
    const cuda::OwnedRange columns = cuda::owned_range(projection_size, plan.columns_per_cta, cta);
    answer.insert(answer.end(),
                  {units.begin, units.end, columns.begin, columns.end,
                   cuda::cta_shared_bytes(shape, units.end - units.begin,
                                          columns.end - columns.begin, plan.staged_rows)});
  }
  return answer;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(lstm_ext, m) {
  m.def(
      "cuda_persistent_plan(int hidden_size, int recurrent_size, int projection_size, "
      "int element_size, int multiprocessors, int shared_bytes_per_multiprocessor, "
      "int shared_bytes_per_block, int reserved_shared_bytes_per_block, "
      "int registers_per_multiprocessor, int registers_per_thread) -> int[]",
      &cuda_persistent_plan);
}

}  // namespace lstm_ext

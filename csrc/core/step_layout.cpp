#include "core/step_layout.h"

#include <algorithm>

namespace lstm_ext {

std::vector<StepLayout> plan_steps(const std::vector<int64_t>& batch_sizes, bool reverse) {
  const int64_t num_steps = static_cast<int64_t>(batch_sizes.size());
  std::vector<int64_t> offsets(num_steps + 1, 0);
  for (int64_t t = 0; t < num_steps; ++t) offsets[t + 1] = offsets[t] + batch_sizes[t];

  std::vector<StepLayout> steps(num_steps);
  for (int64_t k = 0; k < num_steps; ++k) {
    const int64_t t = reverse ? num_steps - 1 - k : k;
    const int64_t previous_t = reverse ? t + 1 : t - 1;
    const int64_t next_t = reverse ? t - 1 : t + 1;
    const bool has_previous = previous_t >= 0 && previous_t < num_steps;
    const bool has_next = next_t >= 0 && next_t < num_steps;
    StepLayout& step = steps[k];
    step.rows = batch_sizes[t];
    step.carried_rows = has_previous ? std::min(batch_sizes[t], batch_sizes[previous_t]) : 0;
    step.finished_from = has_next ? std::min(batch_sizes[t], batch_sizes[next_t]) : 0;
    step.row = offsets[t];
    step.prev_row = has_previous ? offsets[previous_t] : 0;
    step.gate_row = step.row;
    step.cell_row = step.row;
    step.prev_cell_row = step.prev_row;
    step.hidden_row = step.row;
    step.project_row = 0;
    step.project_rows = 0;
    step.project_gate_row = 0;
  }
  return steps;
}

std::vector<ProjectionChunk> plan_projection_chunks(const std::vector<StepLayout>& steps,
                                                    int64_t target_rows) {
  std::vector<ProjectionChunk> chunks;
  for (size_t k = 0; k < steps.size(); ++k) {
    if (chunks.empty() || chunks.back().rows >= target_rows) {
      chunks.push_back({k, steps[k].row, 0});
    }
    ProjectionChunk& chunk = chunks.back();
    chunk.first_row = std::min(chunk.first_row, steps[k].row);
    chunk.rows += steps[k].rows;
  }
  return chunks;
}

void lay_out_forward(std::vector<StepLayout>& steps, const std::vector<ProjectionChunk>& chunks,
                     bool save_for_backward, bool has_projection, int64_t batch) {
  int64_t chunk_first_row = 0;  // packed row held by the first row of the gates buffer
  auto next_chunk = chunks.begin();
  for (size_t k = 0; k < steps.size(); ++k) {
    StepLayout& step = steps[k];
    if (next_chunk != chunks.end() && next_chunk->first_step == k) {
      chunk_first_row = save_for_backward ? 0 : next_chunk->first_row;
      step.project_row = next_chunk->first_row;
      step.project_rows = next_chunk->rows;
      step.project_gate_row = next_chunk->first_row - chunk_first_row;
      ++next_chunk;
    }
    step.gate_row = step.row - chunk_first_row;
    step.cell_row = save_for_backward ? step.row : int64_t(k % 2) * batch;
    step.prev_cell_row = k > 0 ? steps[k - 1].cell_row : 0;
    step.hidden_row = save_for_backward || !has_projection ? step.row : 0;
  }
}

int64_t max_step_rows(const StepLayout* steps, int64_t num_steps) {
  int64_t max_rows = 0;
  for (int64_t k = 0; k < num_steps; ++k) max_rows = std::max(max_rows, steps[k].rows);
  return max_rows;
}

}  // namespace lstm_ext

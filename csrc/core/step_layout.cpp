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
    step.project_steps = 0;
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

int64_t lay_out_forward(std::vector<StepLayout>& steps, const std::vector<ProjectionChunk>& chunks,
                        bool save_for_backward, bool has_projection, int64_t batch,
                        bool step_slots) {
  const bool slots = step_slots && !save_for_backward && !chunks.empty();
  int64_t chunk_first_row = 0;  // packed row held by the first row of the gates buffer
  size_t chunk_first_step = 0;
  int64_t gate_rows = 0;
  auto next_chunk = chunks.begin();
  for (size_t k = 0; k < steps.size(); ++k) {
    StepLayout& step = steps[k];
    if (next_chunk != chunks.end() && next_chunk->first_step == k) {
      chunk_first_row = save_for_backward ? 0 : next_chunk->first_row;
      chunk_first_step = k;
      step.project_row = next_chunk->first_row;
      step.project_rows = next_chunk->rows;
      step.project_gate_row = slots ? 0 : next_chunk->first_row - chunk_first_row;
      const size_t chunk_end =
          next_chunk + 1 != chunks.end() ? next_chunk[1].first_step : steps.size();
      step.project_steps = static_cast<int64_t>(chunk_end - k);
      ++next_chunk;
    }
    step.gate_row =
        slots ? static_cast<int64_t>(k - chunk_first_step) * batch : step.row - chunk_first_row;
    step.cell_row = save_for_backward ? step.row : int64_t(k % 2) * batch;
    step.prev_cell_row = k > 0 ? steps[k - 1].cell_row : 0;
    step.hidden_row = save_for_backward || !has_projection ? step.row : 0;
    gate_rows = std::max(gate_rows, step.gate_row + step.rows);
  }
  return gate_rows;
}

std::vector<StepLayout> batch_rows_of(const StepLayout* steps, int64_t num_steps, int64_t begin,
                                      int64_t end) {
  const auto clamped = [&](int64_t row) {
    return std::clamp<int64_t>(row - begin, 0, end - begin);
  };
  std::vector<StepLayout> slice(steps, steps + num_steps);
  for (StepLayout& step : slice) {
    step.rows = clamped(step.rows);
    step.carried_rows = clamped(step.carried_rows);
    step.finished_from = std::min(clamped(step.finished_from), step.rows);
    step.row += begin;
    step.prev_row += begin;
    step.gate_row += begin;
    step.cell_row += begin;
    step.prev_cell_row += begin;
    step.hidden_row += begin;
  }
  return slice;
}

std::pair<int64_t, int64_t> batch_share(const StepLayout* steps, int64_t num_steps, int64_t parts,
                                        int64_t part) {
  const int64_t batch = max_step_rows(steps, num_steps);
  // steps_of[r]: the steps that row r runs (those with more than r rows).
  std::vector<int64_t> steps_of(batch + 1, 0);
  for (int64_t k = 0; k < num_steps; ++k) {
    if (steps[k].rows > 0) ++steps_of[steps[k].rows - 1];
  }
  for (int64_t r = batch - 1; r >= 0; --r) steps_of[r] += steps_of[r + 1];
  int64_t total = 0;
  for (int64_t r = 0; r < batch; ++r) total += steps_of[r];
  // Part p starts at the first row before which p / parts of the total runs.
  const auto start_of = [&](int64_t p) {
    int64_t row = 0;
    for (int64_t done = 0; row < batch && done * parts < total * p; ++row) done += steps_of[row];
    return row;
  };
  return {start_of(part), part + 1 == parts ? batch : start_of(part + 1)};
}

int64_t max_step_rows(const StepLayout* steps, int64_t num_steps) {
  int64_t max_rows = 0;
  for (int64_t k = 0; k < num_steps; ++k) max_rows = std::max(max_rows, steps[k].rows);
  return max_rows;
}

}  // namespace lstm_ext

// The steps of a layer and where each reads and writes (lstm_layer.h's StepLayout), planned once
// per call by the driver from the batch sizes.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "core/lstm_layer.h"

namespace lstm_ext {

// The steps in the forward pass's processing order (t = 0..T-1, or T-1..0 reversed), laid out
// in buffers that hold all N packed rows (what backward reads), with no input projection. With
// non-increasing batch sizes, the forward direction carries all rows of a step from the step
// before, and the reverse direction starts the extra rows of a longer step from h0/c0.
std::vector<StepLayout> plan_steps(const std::vector<int64_t>& batch_sizes, bool reverse);

// Consecutive steps (in processing order) whose input projection runs as one GEMM; their rows
// are contiguous in the packed layout.
struct ProjectionChunk {
  size_t first_step;  // index in the plan
  int64_t first_row;  // packed row
  int64_t rows;
};

// Chunks of at least target_rows rows each (but the last), in processing order.
std::vector<ProjectionChunk> plan_projection_chunks(const std::vector<StepLayout>& steps,
                                                    int64_t target_rows);

// Lays out a forward pass over `steps` (from plan_steps): each chunk's projection before its
// first step, and unless save_for_backward, the smallest buffers: the gates hold one chunk, the
// cells two step slots of `batch` rows (this step's and the one before), and the pre-projection
// hidden state one. A chunk's gates are its rows one after the other (one GEMM writes them), or
// with step_slots, step j of the chunk's from row j * batch: each batch row then has gate rows
// of its own, which threads that run shares of the batch rows apart need. Returns the rows of
// the gates buffer.
int64_t lay_out_forward(std::vector<StepLayout>& steps, const std::vector<ProjectionChunk>& chunks,
                        bool save_for_backward, bool has_projection, int64_t batch,
                        bool step_slots);

// The most rows of any step.
int64_t max_step_rows(const StepLayout* steps, int64_t num_steps);

// The layout of the batch rows [begin, end) of each step alone: every row index in it is into
// the same buffers, each step's rows counted from `begin` (rows past a step's end are absent).
// The rows of one sequence depend on no other, so these steps run apart from the others.
std::vector<StepLayout> batch_rows_of(const StepLayout* steps, int64_t num_steps, int64_t begin,
                                      int64_t end);

// The batch rows [begin, end) of the part `part` of `parts` that carry about equal numbers of
// rows over all steps (a row runs as many steps as its sequence is long).
std::pair<int64_t, int64_t> batch_share(const StepLayout* steps, int64_t num_steps, int64_t parts,
                                        int64_t part);

}  // namespace lstm_ext

// The CPU's tuning rules in one place: how a layer is split over threads, which GEMM each part
// runs, how the input projection is chunked. Each rule derives from what the processor reports
// (its cache sizes, its vendor, the ISA level in use) and the thread count; the measurements
// behind them are in docs/performance.md.
#pragma once

#include <cstdint>

#include "core/lstm_layer.h"

namespace lstm_ext {
namespace cpu {

// Threads for a layer whose largest step has `max_rows` rows, H hidden units and R recurrent
// columns: one where a step is too small to repay a barrier, else at most one per 64-byte line
// of hidden units.
int64_t layer_threads(int64_t max_rows, int64_t H, int64_t R);

// Whether a layer of `num_steps` steps of at most `max_rows` rows reads a recurrent weight of
// `weight_bytes` (W_hh, or W_hr), whose dot products are `dot_length` long, as stored, through
// dot products, instead of transposing it into panels first: where the layer has too few steps
// to repay that transpose (once per call), the weight outgrows a core's L2, or one or two rows
// read it through dot products long for the vector width. (The thread count plays no part, so
// that the arithmetic, and the results, are the same for any number of threads.)
bool reads_as_stored(int64_t max_rows, int64_t num_steps, int64_t dot_length, int64_t weight_bytes);

// Bytes of the weights a step reads: W_hh (4H, R), and W_hr (R, H) with a projection.
int64_t recurrent_weight_bytes(int64_t H, int64_t R, const void* w_hr);

// Whether the threads of a layer whose steps have at most `max_rows` rows walk their work items
// in reverse on every other step (see Team::reverses): where the steps have so few rows that
// their time goes into reading the weights, and each thread's share of them outgrows half its
// L2.
bool reverses_traversal(int64_t max_rows, int64_t weight_bytes, int64_t threads);

// Whether the `threads` threads of a layer whose steps have at most `max_rows` rows each run a
// share of the batch rows alone, instead of every step's columns together: no step then waits
// for the others, and no thread reads the rows another wrote. Each then reads all the step's
// weights (`weight_bytes`), not a share: where they fit in its L2, and each has rows enough to
// keep its GEMMs busy.
bool splits_batch(int64_t max_rows, int64_t threads, int64_t weight_bytes);

// Whether each thread's panels of W_ih are too large for its L2 to keep from one step to the
// next: the input projection then runs on chunks of several steps and tiles of more rows, so
// that the panels are read once per chunk rather than once per step.
bool streams_input_weights(int64_t input_size, int64_t hidden_size);

// Rows per brgemm call of the kernel's input projection.
int64_t projection_row_tile(int64_t input_size, int64_t hidden_size);

// Floats of B per brgemm call: half of a core's L2, so that B's block stays there while the
// rows of A stream past it.
int64_t brgemm_block_floats();

// The driver's hooks (lstm_layer.h's LayerPolicy) for the CPU.
extern const LayerPolicy kCpuLayerPolicy;

}  // namespace cpu
}  // namespace lstm_ext

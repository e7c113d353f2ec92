// The layer operators' buffers: outputs, the activations the forward saves for backward, and the
// scratch both passes drop at the end of a call.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace lstm_ext {
namespace cpu {

// An uninitialised tensor, as at::empty. On the CPU, from 4 MB on, its memory is a block that an
// earlier such tensor gave back when it was freed, if the process-wide cache keeps one of about
// that size, else new memory advised to use transparent huge pages; the tensor is an ordinary,
// resizable CPU tensor either way.
at::Tensor empty_buffer(at::IntArrayRef sizes, const at::TensorOptions& options);

// The most bytes the cache keeps while no tensor uses them, unless LSTM_EXT_CPU_CACHE_MB sets
// it: a workload of changing shapes then stays near nn.LSTM's resident memory. A step of
// repeated shapes keeps its blocks beyond it, up to its peak in use (docs/memory.md).
constexpr int64_t kDefaultCachedBufferBytes = int64_t(128) << 20;

struct BufferCacheStats {
  int64_t cached_bytes = 0;       // kept for reuse, used by no tensor
  int64_t cached_blocks = 0;
  int64_t in_use_bytes = 0;       // blocks that tensors use
  int64_t limit_bytes = 0;        // the most cached_bytes may reach while the shapes change
  int64_t peak_in_use_bytes = 0;  // the most in use at a time since the shapes last changed
  int64_t hits = 0;               // buffers that took a kept block
  int64_t misses = 0;             // buffers that took new memory
};

BufferCacheStats buffer_cache_stats();

// Sets the most bytes the cache keeps (0: none), returning what it keeps beyond that to the
// operating system.
void set_buffer_cache_limit(int64_t bytes);

// Returns every kept block to the operating system (blocks in use are kept by their tensors).
void empty_buffer_cache();

}  // namespace cpu
}  // namespace lstm_ext

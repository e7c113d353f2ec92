// The operators that show and control the CPU buffer cache (cpu/buffers.h) from Python:
// lstm_ext.memory_stats(), lstm_ext.empty_cache() and the LSTM_EXT_CPU_CACHE_MB limit.
#include <torch/library.h>

#include <vector>

#include "cpu/buffers.h"

namespace lstm_ext {
namespace {

// In the order of lstm_ext/memory.py's STAT_NAMES.
std::vector<int64_t> cpu_buffer_cache_stats() {
  const cpu::BufferCacheStats stats = cpu::buffer_cache_stats();
  return {stats.cached_bytes, stats.cached_blocks, stats.in_use_bytes,     stats.limit_bytes,
          stats.hits,         stats.misses,        stats.peak_in_use_bytes};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(lstm_ext, m) {
  m.def("cpu_buffer_cache_stats() -> int[]", &cpu_buffer_cache_stats);
  m.def("set_cpu_buffer_cache_limit(int limit_bytes) -> ()", &cpu::set_buffer_cache_limit);
  m.def("empty_cpu_buffer_cache() -> ()", &cpu::empty_buffer_cache);
}

}  // namespace lstm_ext

#include "lstm_buffers.h"

#include <ATen/ops/empty.h>
#include <ATen/ops/from_blob.h>
#include <c10/util/Exception.h>

#include <cstdlib>
#include <map>
#include <mutex>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace lstm_ext {
namespace {

constexpr int64_t kHugePage = int64_t(2) << 20;
// From this size on buffers get huge pages and reused_buffer caches their memory.
constexpr int64_t kMinLargeBufferBytes = 2 * kHugePage;

// The whole huge pages of [data, data + bytes) advised to be huge pages, as torch itself does for
// every allocation under THP_MEM_ALLOC_ENABLE=1: faulting in 4 KB pages cost about 17 ms per
// 52 MB (a tenth of a T=100, B=64, H=512 training forward, whose saved gates are that size).
void advise_huge_pages(void* data, int64_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  const uintptr_t begin = reinterpret_cast<uintptr_t>(data);
  const uintptr_t first = (begin + kHugePage - 1) & ~uintptr_t(kHugePage - 1);
  const uintptr_t last = (begin + bytes) & ~uintptr_t(kHugePage - 1);
  // Only a hint: where the kernel has no huge pages to give, nothing changes.
  if (last > first) madvise(reinterpret_cast<void*>(first), last - first, MADV_HUGEPAGE);
#endif
}

// Memory blocks (multiples of kHugePage, huge-page aligned) that reused buffers released, by
// size. glibc maps every allocation over 32 MB afresh and unmaps it when freed, so each call's
// saved gates (N x 4H) had their pages faulted in and zeroed by the kernel again: alternated on a
// 2-core Xeon, trainings at B=256 T=50 H=256 took 0.86x the time with the gates, cells and
// hidden states kept from call to call, B=64 T=100 I=512 H=1024 P=256 0.91x.
class BlockCache {
 public:
  struct Block {
    void* data;
    int64_t bytes;
  };

  // A block of `bytes` or at most a quarter more: a released one if the cache has one, else a
  // new one.
  Block take(int64_t bytes) {
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      const auto fit = blocks_.lower_bound(bytes);
      if (fit != blocks_.end() && fit->first <= bytes + bytes / 4) {
        const Block block{fit->second, fit->first};
        cached_bytes_ -= block.bytes;
        blocks_.erase(fit);
        return block;
      }
    }
    void* data = std::aligned_alloc(kHugePage, bytes);
    TORCH_CHECK(data != nullptr, "lstm_ext: could not allocate a buffer of ", bytes, " bytes");
    advise_huge_pages(data, bytes);
    return {data, bytes};
  }

  // Keeps a released block unless the cache would exceed kMaxCachedBufferBytes.
  void give_back(Block block) {
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      if (cached_bytes_ + block.bytes <= kMaxCachedBufferBytes) {
        blocks_.emplace(block.bytes, block.data);
        cached_bytes_ += block.bytes;
        return;
      }
    }
    std::free(block.data);
  }

 private:
  std::mutex mutex_;
  std::multimap<int64_t, void*> blocks_;
  int64_t cached_bytes_ = 0;
};

// Never destroyed: a tensor freed during the process's exit still gives its block back.
BlockCache& block_cache() {
  static BlockCache* const cache = new BlockCache();
  return *cache;
}

}  // namespace

at::Tensor empty_buffer(at::IntArrayRef sizes, const at::TensorOptions& options) {
  at::Tensor buffer = at::empty(sizes, options);
  if (buffer.is_cpu() && static_cast<int64_t>(buffer.nbytes()) >= kMinLargeBufferBytes) {
    advise_huge_pages(buffer.data_ptr(), static_cast<int64_t>(buffer.nbytes()));
  }
  return buffer;
}

at::Tensor reused_buffer(at::IntArrayRef sizes, const at::TensorOptions& options) {
  int64_t bytes = static_cast<int64_t>(c10::elementSize(c10::typeMetaToScalarType(options.dtype())));
  for (const int64_t size : sizes) bytes *= size;
  if (options.device().type() != at::kCPU || bytes < kMinLargeBufferBytes) {
    return at::empty(sizes, options);
  }
  const BlockCache::Block block =
      block_cache().take((bytes + kHugePage - 1) / kHugePage * kHugePage);
  return at::from_blob(
      block.data, sizes, [block](void*) { block_cache().give_back(block); }, options);
}

}  // namespace lstm_ext

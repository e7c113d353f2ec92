#include "cpu/buffers.h"

#include <ATen/EmptyTensor.h>
#include <c10/core/CPUAllocator.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <mutex>
#include <unordered_map>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace lstm_ext {
namespace cpu {
namespace {

constexpr int64_t kHugePage = int64_t(2) << 20;
// From this size on buffers get huge pages and the cache below keeps their memory.
constexpr int64_t kMinLargeBufferBytes = 2 * kHugePage;

// New memory for a block of `bytes` (a multiple of kHugePage), huge-page aligned, or nullptr.
// On Linux mapped from the kernel itself and advised to be huge pages, as torch does for every
// allocation under THP_MEM_ALLOC_ENABLE=1: faulting in 4 KB pages costs a sizeable share of a
// training forward whose saved gates are tens of MB. Only a hint:
// where the kernel has no huge pages to give, nothing changes. Unmapping returns the memory to
// the system at once, which glibc's free does not promise for blocks under its mmap threshold.
void* map_block(int64_t bytes) {
#if defined(__linux__)
  const auto length = static_cast<size_t>(bytes + kHugePage);
  void* mapped = mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mapped == MAP_FAILED) return nullptr;
  const auto start = reinterpret_cast<uintptr_t>(mapped);
  const uintptr_t aligned = (start + kHugePage - 1) & ~static_cast<uintptr_t>(kHugePage - 1);
  const size_t head = aligned - start;
  const size_t tail = length - head - static_cast<size_t>(bytes);
  if (head > 0) munmap(mapped, head);
  if (tail > 0) munmap(reinterpret_cast<void*>(aligned + bytes), tail);
  void* block = reinterpret_cast<void*>(aligned);
#if defined(MADV_HUGEPAGE)
  madvise(block, static_cast<size_t>(bytes), MADV_HUGEPAGE);
#endif
  return block;
#else
  return std::aligned_alloc(kHugePage, bytes);
#endif
}

void unmap_block(void* block, int64_t bytes) {
#if defined(__linux__)
  munmap(block, static_cast<size_t>(bytes));
#else
  std::free(block);
#endif
}

struct Block {
  void* data;
  int64_t bytes;
};

// Memory blocks (multiples of kHugePage, huge-page aligned) of large buffers, kept when their
// tensor is freed for the next buffer of about that size, up to a limit: beyond it the blocks
// kept longest go back to the system. Without the cache each call's outputs and saved gates have
// their pages faulted in and zeroed by the kernel again (docs/memory.md has the cost).
// A step that repeats (a training loop of fixed shapes) may need more than the limit at once:
// its blocks are kept up to the most bytes in use at a time (the peak) until a buffer finds no
// kept block while more than the limit is kept, which says the shapes changed; the blocks beyond
// the limit then go back, and the peak starts anew. Memory is mapped and unmapped outside the
// lock, so that other threads' buffers do not wait on system calls.
class BlockCache {
 public:
  // A block of `bytes` or at most a quarter more: a kept one if the cache has one, else a new
  // one (after returning the kept ones to the system, if memory is short).
  void* take(int64_t bytes) {
    std::vector<Block> freed;
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      const auto fit = kept_.lower_bound(bytes);
      if (fit != kept_.end() && fit->first <= bytes + bytes / 4) {
        const Block block{fit->second.data, fit->first};
        kept_bytes_ -= fit->first;
        kept_.erase(fit);
        ++stats_.hits;
        mark_in_use(block);
        return block.data;
      }
      ++stats_.misses;
      if (kept_bytes_ > limit_) {
        freed = evict_to(limit_);
        peak_in_use_bytes_ = in_use_bytes_;
      }
    }
    unmap_all(freed);
    void* data = map_block(bytes);
    if (data == nullptr) {
      empty();
      data = map_block(bytes);
    }
    TORCH_CHECK(data != nullptr, "lstm_ext: could not allocate a buffer of ", bytes, " bytes");
    const std::lock_guard<std::mutex> lock(mutex_);
    mark_in_use({data, bytes});
    return data;
  }

  // Keeps a block that take() returned, then returns the oldest kept ones beyond what may be
  // kept: the limit, or the peak in use (0 when the limit is 0: the cache is off).
  void give_back(void* data) {
    std::vector<Block> freed;
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      const auto used = in_use_.find(data);
      const int64_t bytes = used->second;
      in_use_.erase(used);
      in_use_bytes_ -= bytes;
      kept_.emplace(bytes, Kept{data, ++clock_});
      kept_bytes_ += bytes;
      freed = evict_to(limit_ == 0 ? 0 : std::max(limit_, peak_in_use_bytes_));
    }
    unmap_all(freed);
  }

  void set_limit(int64_t bytes) {
    std::vector<Block> freed;
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      limit_ = bytes;
      freed = evict_to(limit_);
    }
    unmap_all(freed);
  }

  void empty() {
    std::vector<Block> freed;
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      freed = evict_to(0);
      peak_in_use_bytes_ = in_use_bytes_;
    }
    unmap_all(freed);
  }

  BufferCacheStats stats() {
    const std::lock_guard<std::mutex> lock(mutex_);
    BufferCacheStats result = stats_;
    result.cached_bytes = kept_bytes_;
    result.cached_blocks = static_cast<int64_t>(kept_.size());
    result.in_use_bytes = in_use_bytes_;
    result.limit_bytes = limit_;
    result.peak_in_use_bytes = peak_in_use_bytes_;
    return result;
  }

 private:
  struct Kept {
    void* data;
    uint64_t kept_at;  // clock_ when kept: the smallest goes first
  };

  void mark_in_use(const Block& block) {
    in_use_.emplace(block.data, block.bytes);
    in_use_bytes_ += block.bytes;
    peak_in_use_bytes_ = std::max(peak_in_use_bytes_, in_use_bytes_);
  }

  // Removes the blocks kept longest until at most `limit` bytes are kept; the caller unmaps
  // them (outside the lock).
  std::vector<Block> evict_to(int64_t limit) {
    std::vector<Block> evicted;
    while (kept_bytes_ > limit) {
      auto oldest = kept_.begin();
      for (auto it = kept_.begin(); it != kept_.end(); ++it) {
        if (it->second.kept_at < oldest->second.kept_at) oldest = it;
      }
      evicted.push_back({oldest->second.data, oldest->first});
      kept_bytes_ -= oldest->first;
      kept_.erase(oldest);
    }
    return evicted;
  }

  static void unmap_all(const std::vector<Block>& blocks) {
    for (const Block& block : blocks) unmap_block(block.data, block.bytes);
  }

  std::mutex mutex_;
  std::multimap<int64_t, Kept> kept_;          // bytes -> block
  std::unordered_map<void*, int64_t> in_use_;  // block -> bytes
  int64_t kept_bytes_ = 0;
  int64_t in_use_bytes_ = 0;
  int64_t peak_in_use_bytes_ = 0;  // since the shapes last changed
  int64_t limit_ = kDefaultCachedBufferBytes;
  uint64_t clock_ = 0;
  BufferCacheStats stats_;
};

// Never destroyed: a tensor freed during the process's exit still gives its block back.
BlockCache& block_cache() {
  static BlockCache* const cache = new BlockCache();
  return *cache;
}

void give_back_block(void* data) { block_cache().give_back(data); }

// The CPU allocator of the layer operators' buffers: blocks of the cache from
// kMinLargeBufferBytes on, c10's CPU allocator below. Tensors made with it are ordinary CPU
// tensors (resizable; a resize allocates through it again).
class CachingCpuAllocator final : public c10::Allocator {
 public:
  c10::DataPtr allocate(size_t bytes) override {
    if (static_cast<int64_t>(bytes) < kMinLargeBufferBytes) {
      return c10::GetCPUAllocator()->allocate(bytes);
    }
    void* data =
        block_cache().take((static_cast<int64_t>(bytes) + kHugePage - 1) / kHugePage * kHugePage);
    return {data, data, &give_back_block, c10::Device(c10::DeviceType::CPU)};
  }

  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }
};

}  // namespace

at::Tensor empty_buffer(at::IntArrayRef sizes, const at::TensorOptions& options) {
  static CachingCpuAllocator allocator;
  return at::detail::empty_generic(sizes, &allocator, c10::DispatchKeySet(c10::DispatchKey::CPU),
                                   c10::typeMetaToScalarType(options.dtype()), std::nullopt);
}

BufferCacheStats buffer_cache_stats() { return block_cache().stats(); }

void set_buffer_cache_limit(int64_t bytes) {
  TORCH_CHECK(bytes >= 0, "lstm_ext: the buffer cache limit must be >= 0 bytes, got ", bytes);
  block_cache().set_limit(bytes);
}

void empty_buffer_cache() { block_cache().empty(); }

}  // namespace cpu
}  // namespace lstm_ext

#include "cpu/buffers.h"

#include <ATen/EmptyTensor.h>
#include <ATen/ops/empty.h>
#include <c10/core/CPUAllocator.h>
#include <c10/util/Exception.h>

#include <cstdlib>
#include <map>
#include <mutex>
#include <unordered_map>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace lstm_ext {
namespace cpu {
namespace {

constexpr int64_t kHugePage = int64_t(2) << 20;
// From this size on buffers get huge pages and the cache below keeps their memory.
constexpr int64_t kMinLargeBufferBytes = 2 * kHugePage;

// A new block (huge-page aligned, a multiple of kHugePage) advised to be huge pages, as torch
// itself does for every allocation under THP_MEM_ALLOC_ENABLE=1: faulting in 4 KB pages cost
// about 17 ms per 52 MB (a tenth of a T=100, B=64, H=512 training forward, whose saved gates are
// that size). Only a hint: where the kernel has no huge pages to give, nothing changes.
void advise_huge_pages(void* block, int64_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  madvise(block, static_cast<size_t>(bytes), MADV_HUGEPAGE);
#endif
}

// Memory blocks (multiples of kHugePage, huge-page aligned) of large buffers, kept when their
// tensor is freed for the next buffer of about that size. glibc maps every allocation from 32 MB
// (and one the size of the last it unmapped) afresh and unmaps it when freed, so each call's
// output and saved gates had their pages faulted in and zeroed by the kernel again: alternated
// on a 2-core Xeon, trainings at B=256 T=50 H=256 took 0.86x the time with the saved
// activations kept from call to call, B=64 T=100 I=512 H=1024 P=256 0.91x.
class BlockCache {
 public:
  // A block of `bytes` or at most a quarter more: a kept one if the cache has one, else a new
  // one.
  void* take(int64_t bytes) {
    const std::lock_guard<std::mutex> lock(mutex_);
    void* data = nullptr;
    int64_t size = bytes;
    const auto fit = kept_.lower_bound(bytes);
    if (fit != kept_.end() && fit->first <= bytes + bytes / 4) {
      size = fit->first;
      data = fit->second;
      kept_bytes_ -= size;
      kept_.erase(fit);
    } else {
      data = std::aligned_alloc(kHugePage, bytes);
      TORCH_CHECK(data != nullptr, "lstm_ext: could not allocate a buffer of ", bytes, " bytes");
      advise_huge_pages(data, bytes);
    }
    in_use_.emplace(data, size);
    return data;
  }

  // Keeps a block that take() returned unless the cache would exceed kMaxCachedBufferBytes.
  void give_back(void* data) {
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      const auto block = in_use_.find(data);
      const int64_t size = block->second;
      in_use_.erase(block);
      if (kept_bytes_ + size <= kMaxCachedBufferBytes) {
        kept_.emplace(size, data);
        kept_bytes_ += size;
        return;
      }
    }
    std::free(data);
  }

 private:
  std::mutex mutex_;
  std::multimap<int64_t, void*> kept_;        // bytes -> block
  std::unordered_map<void*, int64_t> in_use_;  // block -> bytes
  int64_t kept_bytes_ = 0;
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
    void* data = block_cache().take((static_cast<int64_t>(bytes) + kHugePage - 1) / kHugePage *
                                    kHugePage);
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

}  // namespace cpu
}  // namespace lstm_ext

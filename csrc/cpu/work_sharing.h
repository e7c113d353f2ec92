// How the threads of a CPU layer kernel share the work of each step: the barrier between steps,
// the work items of a step's phases, and the team that holds both (layer_forward.cpp,
// layer_backward.cpp).
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <thread>
#include <vector>

namespace lstm_ext {
namespace cpu {

// Work items of hidden units and projection columns are multiples of one 64-byte line.
constexpr int64_t kVectorColumns = 16;

// Columns or rows [begin, end).
struct IndexRange {
  int64_t begin;
  int64_t end;
  int64_t size() const { return end - begin; }
};

// The barrier between the steps of a team of threads: a counter and a generation, spinning with
// pause (then yielding to the scheduler, should the threads outnumber the cores). At small
// batches it is a step's largest cost after its GEMM, and it costs less than OpenMP's.
class StepBarrier {
 public:
  void set_threads(int64_t threads) { threads_ = threads; }

  void wait() {
    if (threads_ == 1) return;
    // The phase cannot end before this thread arrives: the generation read here is its own.
    const int64_t generation = generation_.load(std::memory_order_acquire);
    if (arrived_.fetch_add(1, std::memory_order_acq_rel) == threads_ - 1) {
      arrived_.store(0, std::memory_order_relaxed);
      generation_.store(generation + 1, std::memory_order_release);
      return;
    }
    for (int64_t spins = 0; generation_.load(std::memory_order_acquire) == generation; ++spins) {
      if (spins < kSpinsBeforeYield) {
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
      } else {
        std::this_thread::yield();
      }
    }
  }

 private:
  static constexpr int64_t kSpinsBeforeYield = int64_t(1) << 16;
  int64_t threads_ = 1;
  alignas(64) std::atomic<int64_t> arrived_{0};
  alignas(64) std::atomic<int64_t> generation_{0};
};

// Work items per thread in each phase of a step (fewer where kMinItemColumns allows no more):
// enough for a fast core to take over the last items of a slow one.
constexpr int64_t kItemsPerThread = 4;

// Columns of a work item at least: narrower GEMM calls cost more than they balance.
constexpr int64_t kMinItemColumns = 64;

// [0, total) columns as `count` work items of whole vectors, as even as whole vectors allow
// (the last one may end in part of a vector).
struct ColumnItems {
  int64_t total;
  int64_t count;
  IndexRange operator[](int64_t item) const {
    const int64_t vectors = (total + kVectorColumns - 1) / kVectorColumns;
    const auto begin = [&](int64_t i) {
      return std::min(total, vectors * i / count * kVectorColumns);
    };
    return {begin(item), begin(item + 1)};
  }
};

// The same number of items for every thread, so that each thread's home range (StepItems) holds
// an even share of the columns: up to kItemsPerThread each, of kMinItemColumns at least unless
// that left a thread without one.
inline ColumnItems column_items(int64_t total, int64_t threads) {
  const int64_t vectors = (total + kVectorColumns - 1) / kVectorColumns;
  const int64_t per_thread = std::clamp<int64_t>(
      vectors / (threads * (kMinItemColumns / kVectorColumns)), 1, kItemsPerThread);
  return {total, std::max<int64_t>(1, std::min(vectors, threads * per_thread))};
}

// The work items of one phase of the steps, claimed by a team's threads. Each thread has a home
// range (the items a static split would give it), claims it in order, so that step after step it
// mostly reads the same weight panels, and then claims what is left of the others' ranges. No
// step then waits for a slow core: on shared VMs one vCPU may run at half speed for seconds, and
// with a static split the other would sit at every barrier meanwhile.
// Each home range's claims are one atomic word tagged with the round, a number the caller gives
// each run (from 1, new in each run, and a barrier between two runs), so rounds need no reset.
// Which thread runs an item does not change its arithmetic: results stay deterministic.
class StepItems {
 public:
  // By one thread, followed by a barrier before the first run.
  void set_up(int64_t threads, int64_t count) {
    threads_ = threads;
    count_ = count;
    claims_ = std::vector<Claim>(threads);
  }

  // work(item) for the home items of `thread` only (no claims), e.g. to pack their panels.
  template <typename Work>
  void for_home_items(int64_t thread, const Work& work) const {
    for (int64_t item = home_begin(thread); item < home_begin(thread + 1); ++item) work(item);
  }

  // work(item) for every item, each once, over the threads that call it with this round;
  // `reversed` walks every home range from its end (see Team::reverses_on).
  template <typename Work>
  void run(int64_t thread, uint64_t round, bool reversed, const Work& work) {
    for (int64_t offset = 0; offset < threads_; ++offset) {
      const int64_t owner = (thread + offset) % threads_;
      const uint64_t begin = home_begin(owner);
      const uint64_t end = home_begin(owner + 1);
      std::atomic<uint64_t>& claim = claims_[owner].next;
      uint64_t seen = claim.load(std::memory_order_relaxed);
      for (;;) {
        const uint64_t next = (seen >> kRoundShift) == round ? seen & kItemMask : begin;
        if (next >= end) break;
        const uint64_t claimed = (round << kRoundShift) | (next + 1);
        // Only the claim needs to be atomic: the items' results reach the other threads through
        // the barrier after the run.
        if (claim.compare_exchange_weak(seen, claimed, std::memory_order_relaxed)) {
          work(static_cast<int64_t>(reversed ? begin + end - 1 - next : next));
          seen = claimed;
        }
      }
    }
  }

 private:
  static constexpr int kRoundShift = 32;
  static constexpr uint64_t kItemMask = (uint64_t(1) << kRoundShift) - 1;
  struct alignas(64) Claim {
    std::atomic<uint64_t> next{0};  // round << kRoundShift | the owner's next unclaimed item
  };
  int64_t home_begin(int64_t thread) const { return count_ * thread / threads_; }
  int64_t threads_ = 1;
  int64_t count_ = 0;
  std::vector<Claim> claims_;
};

// Rows of a step per band of the forward's work items at least (see RowBands): smaller bands
// make the GEMM calls less efficient than they balance.
constexpr int64_t kMinBandRows = 64;

// The forward of a step with many rows splits each item of hidden units into bands of rows:
// an item's gates, just written by its GEMM, are still in L1 when its cell reads them, and the
// smaller items keep a core from waiting long at the barrier for the other's last item.
struct RowBands {
  int64_t count = 1;
  // The band's rows [begin, end) of a step of `rows` rows (some bands empty when rows < count).
  IndexRange operator()(int64_t band, int64_t rows) const {
    return {rows * band / count, rows * (band + 1) / count};
  }
};

inline RowBands row_bands(int64_t max_rows) {
  return {std::max<int64_t>(1, max_rows / kMinBandRows)};
}

// What a layer's threads share: the step barrier and the claims of the two kinds of work items,
// hidden units (in the forward, a band of rows of them: `unit_work` counts bands x unit items,
// band after band of a unit item) and recurrent-state columns (the projection's columns;
// without the projection, the hidden units again, which only the backward uses).
struct Team {
  StepBarrier barrier;
  ColumnItems unit_items;
  ColumnItems state_items;
  RowBands bands;
  StepItems unit_work;
  StepItems state_work;
  // Whether the threads walk their items (and an item its gates) in reverse on every other
  // step: where a thread's weights outgrow its L2, the caches keep the last ones it read, which
  // a reversed walk reads first.
  bool reverses = false;

  bool reverses_on(int64_t step) const { return reverses && step % 2 == 1; }

  void set_up(int64_t threads, int64_t H, int64_t R, bool reversing,
              RowBands row_bands = RowBands()) {
    barrier.set_threads(threads);
    reverses = reversing;
    unit_items = column_items(H, threads);
    state_items = column_items(R, threads);
    bands = row_bands;
    unit_work.set_up(threads, unit_items.count * bands.count);
    state_work.set_up(threads, state_items.count);
  }

  // A team of one thread that runs all of `shared`'s work items (of the same columns, whose
  // panels `shared` packed), over its own batch rows.
  void set_up_alone(const Team& shared) {
    barrier.set_threads(1);
    unit_items = shared.unit_items;
    state_items = shared.state_items;
    bands = RowBands();
    unit_work.set_up(1, unit_items.count);
    state_work.set_up(1, state_items.count);
  }
};

}  // namespace cpu
}  // namespace lstm_ext

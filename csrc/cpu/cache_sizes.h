// The sizes of the caches of the processor the process runs on, as the system reports them.
#pragma once

#include <cstdint>

namespace lstm_ext {
namespace cpu {

struct CacheSizes {
  int64_t l1d;  // bytes of one core's L1 data cache
  int64_t l2;   // bytes of one core's L2 cache
};

// Read once from the C library (sysconf) or Linux's sysfs; where neither reports a level, the
// smallest size of current server and laptop cores (48 KB L1d, 1 MB L2).
const CacheSizes& cache_sizes();

}  // namespace cpu
}  // namespace lstm_ext

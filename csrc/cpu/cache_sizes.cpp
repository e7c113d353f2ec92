#include "cpu/cache_sizes.h"

#include <unistd.h>

#include <fstream>
#include <string>

namespace lstm_ext {
namespace cpu {
namespace {

// The size of cpu0's data or unified cache of `level` from sysfs, or 0.
int64_t sysfs_cache_bytes(int level) {
  for (int index = 0; index < 8; ++index) {
    const std::string folder =
        "/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(index) + "/";
    std::ifstream level_file(folder + "level"), type_file(folder + "type"),
        size_file(folder + "size");
    int found_level = 0;
    std::string type, size;
    if (!(level_file >> found_level) || !(type_file >> type) || !(size_file >> size)) continue;
    if (found_level != level || type == "Instruction") continue;
    const int64_t value = std::stoll(size);
    const char unit = size.back();
    return unit == 'K' ? value << 10 : unit == 'M' ? value << 20 : value;
  }
  return 0;
}

// glibc's sysconf knows the cache sizes (from CPUID on x86); sysfs has them elsewhere on Linux.
int64_t reported_bytes(int level, int64_t sysconf_bytes, int64_t fallback) {
  const int64_t bytes = sysconf_bytes > 0 ? sysconf_bytes : sysfs_cache_bytes(level);
  return bytes > 0 ? bytes : fallback;
}

int64_t sysconf_bytes(int level) {
#if defined(_SC_LEVEL1_DCACHE_SIZE) && defined(_SC_LEVEL2_CACHE_SIZE)
  return sysconf(level == 1 ? _SC_LEVEL1_DCACHE_SIZE : _SC_LEVEL2_CACHE_SIZE);
#else
  return 0;
#endif
}

}  // namespace

const CacheSizes& cache_sizes() {
  static const CacheSizes sizes = {
      reported_bytes(1, sysconf_bytes(1), int64_t(48) << 10),
      reported_bytes(2, sysconf_bytes(2), int64_t(1) << 20),
  };
  return sizes;
}

}  // namespace cpu
}  // namespace lstm_ext

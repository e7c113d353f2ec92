#include "cpu/isa.h"

#include <c10/util/Exception.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cstdlib>

namespace lstm_ext {
namespace cpu {
namespace {

// Every level of this architecture, lowest first, and whether the processor (and the operating
// system, which must save the wider registers) runs it.
struct Level {
  const char* name;
  const Microkernels* kernels;
  bool supported;
};

std::vector<Level> levels_of_this_processor() {
#if defined(__x86_64__) && defined(__GNUC__)
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  const bool avx512 = avx2 && __builtin_cpu_supports("avx512f") &&
                      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
                      __builtin_cpu_supports("avx512vl");
  return {{"default", baseline_microkernels(), true},
          {"avx2", avx2_microkernels(), avx2},
          {"avx512", avx512_microkernels(), avx512}};
#else
  return {{baseline_microkernels()->isa, baseline_microkernels(), true}};
#endif
}

const std::vector<Level>& levels() {
  static const std::vector<Level> all = levels_of_this_processor();
  return all;
}

std::string lower_case(std::string text) {
  std::transform(text.begin(), text.end(), text.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return text;
}

// The best supported level at or below `name`'s; "" means no cap.
const Microkernels* capped_at(const std::string& name) {
  const std::string wanted = lower_case(name);
  const std::vector<Level>& all = levels();
  const Microkernels* chosen = all.front().kernels;
  std::string known;
  for (const Level& level : all) {
    if (level.supported) chosen = level.kernels;
    if (wanted == level.name || (wanted == "default" && &level == &all.front())) return chosen;
    known += known.empty() ? level.name : std::string(", ") + level.name;
  }
  TORCH_CHECK(wanted.empty(), "LSTM_EXT_CPU_ISA must be one of ", known, " (or unset), got '", name,
              "'");
  return chosen;
}

std::atomic<const Microkernels*> current_kernels{nullptr};

}  // namespace

const Microkernels& microkernels() {
  const Microkernels* kernels = current_kernels.load(std::memory_order_acquire);
  if (kernels == nullptr) {
    const char* variable = std::getenv("LSTM_EXT_CPU_ISA");
    kernels = capped_at(variable != nullptr ? variable : "");
    current_kernels.store(kernels, std::memory_order_release);
  }
  return *kernels;
}

std::vector<std::string> supported_isas() {
  std::vector<std::string> names;
  for (const Level& level : levels()) {
    if (level.supported) names.push_back(level.name);
  }
  return names;
}

std::string select_isa(const std::string& name) {
  const Microkernels* kernels = capped_at(name);
  current_kernels.store(kernels, std::memory_order_release);
  return kernels->isa;
}

}  // namespace cpu
}  // namespace lstm_ext

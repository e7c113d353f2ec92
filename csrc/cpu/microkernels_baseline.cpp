// The microkernels for the architecture's baseline, compiled with the build's own flags:
// x86-64's SSE2 (16 registers of 16 bytes, no FMA) or ARM64's NEON (32 registers of 16 bytes).
#include "cpu/microkernel_templates.h"

namespace lstm_ext {
namespace cpu {
namespace {
struct Baseline {
  static constexpr int64_t kVectorBytes = 16;
#if defined(__aarch64__)
  static constexpr int64_t kRegisters = 32;
#else
  static constexpr int64_t kRegisters = 16;
#endif
};
}  // namespace

#if defined(__aarch64__)
LSTM_EXT_DEFINE_MICROKERNELS(Baseline, "neon", , baseline_microkernels)
#else
LSTM_EXT_DEFINE_MICROKERNELS(Baseline, "default", , baseline_microkernels)
#endif

}  // namespace cpu
}  // namespace lstm_ext

// The microkernels for AVX2 with FMA (x86-64-v3): 16 registers of 32 bytes.
#include "cpu/microkernel_templates.h"

namespace lstm_ext {
namespace cpu {

#if defined(__x86_64__) && defined(__GNUC__)
namespace {
struct Avx2 {
  static constexpr int64_t kVectorBytes = 32;
  static constexpr int64_t kRegisters = 16;
};
}  // namespace

LSTM_EXT_DEFINE_MICROKERNELS(Avx2, "avx2",
                             __attribute__((target("avx2,fma,f16c,bmi,bmi2,lzcnt,popcnt,movbe"))),
                             avx2_microkernels)
#else
const Microkernels* avx2_microkernels() { return nullptr; }
#endif

}  // namespace cpu
}  // namespace lstm_ext

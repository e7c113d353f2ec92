// The microkernels for AVX-512 (x86-64-v4): 32 registers of 64 bytes.
#include "cpu/microkernel_templates.h"

namespace lstm_ext {
namespace cpu {

#if defined(__x86_64__) && defined(__GNUC__)
namespace {
struct Avx512 {
  static constexpr int64_t kVectorBytes = 64;
  static constexpr int64_t kRegisters = 32;
};
}  // namespace

LSTM_EXT_DEFINE_MICROKERNELS(
    Avx512, "avx512",
    __attribute__((target("avx512f,avx512bw,avx512cd,avx512dq,avx512vl,avx2,fma,f16c,bmi,bmi2,"
                          "lzcnt,popcnt,movbe"))),
    avx512_microkernels)
#else
const Microkernels* avx512_microkernels() { return nullptr; }
#endif

}  // namespace cpu
}  // namespace lstm_ext

// The instruction-set level of the CPU microkernels: the best the processor runs, capped by the
// environment variable LSTM_EXT_CPU_ISA (like ATen's ATEN_CPU_CAPABILITY), chosen on first use.
#pragma once

#include <string>
#include <vector>

#include "cpu/microkernels.h"

namespace lstm_ext {
namespace cpu {

// The microkernels in use. The first call reads LSTM_EXT_CPU_ISA and throws on an unknown
// level: make it outside parallel regions, where the error can reach the caller.
const Microkernels& microkernels();

// The names of the levels this processor runs, lowest first: "default" (x86-64's SSE2) or
// "neon" (ARM64), then "avx2" and "avx512" where it has them.
std::vector<std::string> supported_isas();

// Uses the level `name` from now on ("default" names the baseline on every architecture), or
// the best supported one below it; returns the name of the level chosen. An unknown name is an
// error. Meant for tests and benchmarks: calls already running finish at their level.
std::string select_isa(const std::string& name);

}  // namespace cpu
}  // namespace lstm_ext

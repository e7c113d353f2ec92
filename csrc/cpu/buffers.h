// The layer operators' buffers: outputs, the activations the forward saves for backward, and the
// scratch both passes drop at the end of a call.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace lstm_ext {
namespace cpu {

// An uninitialised tensor, as at::empty. On the CPU, from 4 MB on, its memory is a block that an
// earlier such tensor gave back when it was freed, if the process-wide cache keeps one of about
// that size (at most kMaxCachedBufferBytes in all), else new memory advised to use transparent
// huge pages; the tensor is an ordinary, resizable CPU tensor either way.
at::Tensor empty_buffer(at::IntArrayRef sizes, const at::TensorOptions& options);

// The most bytes the CPU cache of empty_buffer keeps while no tensor uses them.
constexpr int64_t kMaxCachedBufferBytes = int64_t(1) << 30;

}  // namespace cpu
}  // namespace lstm_ext

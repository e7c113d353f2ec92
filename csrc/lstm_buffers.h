// The layer operators' buffers: the activations the forward saves for backward and the scratch
// both passes drop at the end of a call.
#pragma once

#include <ATen/core/Tensor.h>

namespace lstm_ext {

// at::empty, with CPU buffers of 4 MB and more advised to use transparent huge pages. For
// tensors handed to the caller (the output, the input's gradient), which must be ordinary,
// resizable tensors.
at::Tensor empty_buffer(at::IntArrayRef sizes, const at::TensorOptions& options);

// An uninitialised buffer that only the layer operators see (saved activations, scratch): on the
// CPU, from 4 MB, memory that an earlier such buffer released when it was freed, kept in a
// process-wide cache of at most kMaxCachedBufferBytes; elsewhere, or smaller, at::empty.
at::Tensor reused_buffer(at::IntArrayRef sizes, const at::TensorOptions& options);

// The most bytes the CPU cache of reused_buffer keeps while no buffer uses them.
constexpr int64_t kMaxCachedBufferBytes = int64_t(1) << 30;

}  // namespace lstm_ext

// 16-bit layers through a backend's float32 layer kernels: their tensors widened to float32, the
// results rounded back.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Optional.h>

#include "core/lstm_layer.h"

namespace lstm_ext {

// Whether a layer of `input`'s dtype runs through the backend's float32 layer kernels. Where a
// backend has them and they ask for it (the CPU; FloatLayerKernels::widens_16bit_layers), 16-bit
// GEMMs may have no faster hardware to run on, and a step loop of ATen calls forgoes all that
// the layer kernels gain. The layer then keeps h and c in float32 between steps (more accurate
// than rounding them to 16 bits at each step); what it stores and returns stays 16-bit.
bool widens_to_float(const at::Tensor& input, const Backend& backend);

// `tensor` in `dtype`, contiguous, in a buffer of backend.empty's: the CPU's buffer cache then
// spares the widened weights and results of a large layer new pages at every call.
at::Tensor converted(const at::Tensor& tensor, at::ScalarType dtype, const Backend& backend);

at::Tensor widened(const at::Tensor& tensor, const Backend& backend);
std::optional<at::Tensor> widened(const std::optional<at::Tensor>& tensor, const Backend& backend);

}  // namespace lstm_ext

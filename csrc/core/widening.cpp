#include "core/widening.h"

namespace lstm_ext {

bool widens_to_float(const at::Tensor& input, const Backend& backend) {
  return backend.float_layer != nullptr && backend.float_layer->widens_16bit_layers &&
         (input.scalar_type() == at::kHalf || input.scalar_type() == at::kBFloat16);
}

at::Tensor converted(const at::Tensor& tensor, at::ScalarType dtype, const Backend& backend) {
  at::Tensor result = backend.empty(tensor.sizes(), tensor.options().dtype(dtype));
  result.copy_(tensor);
  return result;
}

at::Tensor widened(const at::Tensor& tensor, const Backend& backend) {
  return converted(tensor, at::kFloat, backend);
}

std::optional<at::Tensor> widened(const std::optional<at::Tensor>& tensor, const Backend& backend) {
  return tensor.has_value() ? std::optional<at::Tensor>(widened(*tensor, backend)) : std::nullopt;
}

}  // namespace lstm_ext

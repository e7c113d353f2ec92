// Host check of csrc/lstm_math.h, the header the CPU loop and the CUDA kernels share: it compiles
// with a plain host compiler, and its vector variants (the CUDA kernels' aligned path) give
// bit-identical results to the element functions (the CPU loop's and the CUDA scalar path's),
// writing nothing outside the rows and columns of the step; and the host's float activations
// stay within their error bounds. Built and run by tests/test_cuda.py under AddressSanitizer,
// with buffers of the exact sizes the params describe.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <initializer_list>
#include <limits>
#include <random>
#include <vector>

#include "core/lstm_math.h"

namespace {

struct StepShape {
  int64_t rows, hidden_size, hidden_stride, carried_rows;
};

template <typename T>
std::vector<T> random_values(std::size_t count, std::mt19937& generator) {
  std::uniform_real_distribution<double> uniform(-2.0, 2.0);
  std::vector<T> values(count);
  for (T& value : values) value = static_cast<T>(uniform(generator));
  return values;
}

template <typename T>
bool same_bits(const std::vector<T>& a, const std::vector<T>& b, const char* what,
               const StepShape& shape, int width) {
  if (a.size() == b.size() &&
      (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0)) {
    return true;
  }
  std::printf("MISMATCH %s (sizeof %zu, width %d, rows %lld, H %lld, stride %lld, carried %lld)\n",
              what, sizeof(T), width, static_cast<long long>(shape.rows),
              static_cast<long long>(shape.hidden_size),
              static_cast<long long>(shape.hidden_stride),
              static_cast<long long>(shape.carried_rows));
  return false;
}

// Buffers of one forward step; `bind` points the params at them.
template <typename T>
struct ForwardBuffers {
  std::vector<T> gates, prev_cell, initial_cell, cell, hidden;

  lstm_ext::ForwardStepParams<T> bind(const StepShape& s) {
    lstm_ext::ForwardStepParams<T> p;
    p.gates = gates.data();
    p.prev_cell = prev_cell.data();
    p.initial_cell = initial_cell.data();
    p.cell = cell.data();
    p.hidden = hidden.data();
    p.rows = s.rows;
    p.hidden_size = s.hidden_size;
    p.hidden_stride = s.hidden_stride;
    p.carried_rows = s.carried_rows;
    return p;
  }
};

template <typename T, int kWidth>
bool check_forward(const StepShape& s, std::mt19937& generator) {
  const int64_t H = s.hidden_size;
  ForwardBuffers<T> element;
  element.gates = random_values<T>(s.rows * 4 * H, generator);
  element.prev_cell = random_values<T>(s.carried_rows * H, generator);
  element.initial_cell = random_values<T>(s.rows * H, generator);
  element.cell = random_values<T>(s.rows * H, generator);
  // The last row of `hidden` ends at its H-th column, as in a view of a wider buffer.
  element.hidden = random_values<T>((s.rows - 1) * s.hidden_stride + H, generator);
  ForwardBuffers<T> vector = element;

  const auto element_params = element.bind(s);
  const auto vector_params = vector.bind(s);
  for (int64_t row = 0; row < s.rows; ++row) {
    for (int64_t col = 0; col < H; ++col) {
      lstm_ext::lstm_forward_element<T, T>(element_params, row, col);
    }
    for (int64_t col = 0; col < H; col += kWidth) {
      lstm_ext::lstm_forward_vector<T, T, kWidth>(vector_params, row, col);
    }
  }
  return same_bits(element.gates, vector.gates, "forward gates", s, kWidth) &&
         same_bits(element.cell, vector.cell, "forward cell", s, kWidth) &&
         same_bits(element.hidden, vector.hidden, "forward hidden", s, kWidth) &&
         same_bits(element.prev_cell, vector.prev_cell, "forward prev_cell", s, kWidth) &&
         same_bits(element.initial_cell, vector.initial_cell, "forward initial_cell", s, kWidth);
}

template <typename T>
struct BackwardBuffers {
  std::vector<T> gates, cell, prev_cell, initial_cell, grad_hidden, grad_hidden_recurrent,
      grad_cell, grad_gates;

  lstm_ext::BackwardStepParams<T> bind(const StepShape& s) {
    lstm_ext::BackwardStepParams<T> p;
    p.gates = gates.data();
    p.cell = cell.data();
    p.prev_cell = prev_cell.data();
    p.initial_cell = initial_cell.data();
    p.grad_hidden = grad_hidden.data();
    p.grad_hidden_recurrent =
        grad_hidden_recurrent.empty() ? nullptr : grad_hidden_recurrent.data();
    p.grad_cell = grad_cell.data();
    p.grad_gates = grad_gates.data();
    p.rows = s.rows;
    p.hidden_size = s.hidden_size;
    p.grad_hidden_stride = s.hidden_stride;
    p.carried_rows = s.carried_rows;
    return p;
  }
};

template <typename T, int kWidth>
bool check_backward(const StepShape& s, bool with_recurrent_grad, std::mt19937& generator) {
  const int64_t H = s.hidden_size;
  BackwardBuffers<T> element;
  element.gates = random_values<T>(s.rows * 4 * H, generator);
  element.cell = random_values<T>(s.rows * H, generator);
  element.prev_cell = random_values<T>(s.carried_rows * H, generator);
  element.initial_cell = random_values<T>(s.rows * H, generator);
  element.grad_hidden = random_values<T>((s.rows - 1) * s.hidden_stride + H, generator);
  if (with_recurrent_grad) element.grad_hidden_recurrent = random_values<T>(s.rows * H, generator);
  element.grad_cell = random_values<T>(s.rows * H, generator);
  element.grad_gates = random_values<T>(s.rows * 4 * H, generator);
  BackwardBuffers<T> vector = element;

  const auto element_params = element.bind(s);
  const auto vector_params = vector.bind(s);
  for (int64_t row = 0; row < s.rows; ++row) {
    for (int64_t col = 0; col < H; ++col) {
      lstm_ext::lstm_backward_element<T, T>(element_params, row, col);
    }
    for (int64_t col = 0; col < H; col += kWidth) {
      lstm_ext::lstm_backward_vector<T, T, kWidth>(vector_params, row, col);
    }
  }
  return same_bits(element.grad_gates, vector.grad_gates, "backward grad_gates", s, kWidth) &&
         same_bits(element.grad_cell, vector.grad_cell, "backward grad_cell", s, kWidth) &&
         same_bits(element.gates, vector.gates, "backward gates", s, kWidth) &&
         same_bits(element.grad_hidden, vector.grad_hidden, "backward grad_hidden", s, kWidth);
}

template <typename T, int kWidth>
int check_all(std::mt19937& generator) {
  // Rows starting from the initial state (carried_rows < rows), none, or all; padded strides.
  const StepShape shapes[] = {
      {1, kWidth, kWidth, 0},
      {5, 2 * kWidth, 2 * kWidth, 5},
      {6, 3 * kWidth, 5 * kWidth, 2},
      {7, 8 * kWidth, 9 * kWidth, 0},
  };
  int failures = 0;
  for (const StepShape& shape : shapes) {
    failures += !check_forward<T, kWidth>(shape, generator);
    failures += !check_backward<T, kWidth>(shape, false, generator);
    failures += !check_backward<T, kWidth>(shape, true, generator);
  }
  return failures;
}

// The host's float activations against libm in double: exp_primitive relatively, over the range
// where it is not clamped; tanh_activation and sigmoid absolutely (both near their limits of
// +-1, 0 and 1 over most of the range), through saturation.
int check_activation_accuracy() {
  double exp_error = 0.0;
  double tanh_error = 0.0;
  double sigmoid_error = 0.0;
  for (float x = -87.0f; x < 87.3f; x += 1e-3f) {
    const double expected = std::exp(static_cast<double>(x));
    exp_error = std::max(exp_error, std::fabs(lstm_ext::exp_primitive(x) - expected) / expected);
  }
  for (float x = -20.0f; x < 20.0f; x += 1e-4f) {
    const double xd = static_cast<double>(x);
    tanh_error = std::max(tanh_error, std::fabs(lstm_ext::tanh_activation(x) - std::tanh(xd)));
    sigmoid_error =
        std::max(sigmoid_error, std::fabs(lstm_ext::sigmoid(x) - 1.0 / (1.0 + std::exp(-xd))));
  }
  std::printf("max error: exp %.3g (relative), tanh %.3g, sigmoid %.3g\n", exp_error, tanh_error,
              sigmoid_error);
  return (exp_error > 2e-7) + (tanh_error > 5e-7) + (sigmoid_error > 2e-7);
}

// NaN stays NaN through every host activation (the clamps must keep it: a NaN in a model's
// activations is the sign of a diverged training), and tanh and sigmoid reach their limits
// exactly where they saturate and at the infinities (a saturated gate's derivative, 1 - g^2 or
// s (1 - s), is then 0, as in libm and nn.LSTM). Built here without FMA contraction, the rational
// tanh alone would reach 1 at its clamp; the extension's build contracts it to 1 - 6e-8, which
// tests/test_forward.py's saturating inputs catch.
int check_special_values() {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  const bool nan_kept = std::isnan(lstm_ext::exp_primitive(nan)) &&
                        std::isnan(lstm_ext::tanh_activation(nan)) &&
                        std::isnan(lstm_ext::sigmoid(nan)) && std::isnan(lstm_ext::sigmoid(-nan));
  bool saturation_exact = std::isinf(lstm_ext::exp_primitive(inf)) &&
                          lstm_ext::exp_primitive(-inf) >= 0.0f &&
                          lstm_ext::exp_primitive(-inf) < 1e-37f;
  for (const float x : {8.0f, 9.5f, 30.0f, 1e6f, inf}) {
    saturation_exact = saturation_exact && lstm_ext::tanh_activation(x) == 1.0f &&
                       lstm_ext::tanh_activation(-x) == -1.0f && lstm_ext::sigmoid(3 * x) == 1.0f &&
                       lstm_ext::sigmoid(-10 * x) >= 0.0f && lstm_ext::sigmoid(-10 * x) < 1e-34f &&
                       (x < 9.0f || lstm_ext::sigmoid(-10 * x) == 0.0f);
  }
  std::printf("NaN kept: %d, saturation exact: %d\n", nan_kept, saturation_exact);
  return !nan_kept + !saturation_exact;
}

}  // namespace

int main() {
  std::mt19937 generator(12345);
  // The vector widths the CUDA kernels use (float, half types: 4; double: 2), and others.
  const int failures = check_all<float, 4>(generator) + check_all<float, 2>(generator) +
                       check_all<float, 8>(generator) + check_all<double, 2>(generator) +
                       check_all<double, 4>(generator);
  if (failures != 0) {
    std::printf("%d mismatching checks\n", failures);
    return 1;
  }
  std::printf("vector variants match the element functions\n");
  if (check_activation_accuracy() != 0) {
    std::printf("activations less accurate than their bounds\n");
    return 1;
  }
  if (check_special_values() != 0) {
    std::printf("activations lose NaN or do not saturate\n");
    return 1;
  }
  return 0;
}

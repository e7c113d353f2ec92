// The per-element math of an LSTM step, written once for the CPU loops and the CUDA kernels.
//
// Nothing here knows about torch tensors: the step kernels receive plain parameter structs
// (pointers and sizes) and call `lstm_forward_element` / `lstm_backward_element` for one
// (row, column) of the step. The CPU path runs them in a loop over rows and columns, the CUDA
// path in one thread per element, so the CPU tests exercise the same math and indexing as the GPU.
//
// Layout of one step (rows = the sequences still active at that step, H = hidden size):
//   gates          (rows, 4H)  gate blocks in PyTorch's order i, f, g, o
//   cell, hidden   (rows, H)
// Rows [0, carried_rows) take their previous cell state from the step processed before
// (`prev_cell`); rows [carried_rows, rows) start a sequence here and take it from the initial
// state (`initial_cell`, indexed by the same row). Only the reverse direction of a packed batch
// has such rows after its first step.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define LSTM_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define LSTM_HOST_DEVICE inline __attribute__((always_inline))
#endif

namespace lstm_ext {

#if !defined(__CUDA_ARCH__)
inline int32_t float_bits(float x) {
  int32_t bits;
  std::memcpy(&bits, &x, sizeof(float));
  return bits;
}

inline float bits_float(int32_t bits) {
  float x;
  std::memcpy(&x, &bits, sizeof(float));
  return x;
}

constexpr int32_t kMagnitudeMask = 0x7fffffff;
constexpr int32_t kInfinityBits = 0x7f800000;

// x with its magnitude limited to `limit` (> 0): the sign kept, NaN kept, +-inf to +-limit. The
// float clamps `limit < x ? limit : x` it replaces let GCC split each activation into a
// saturated path, which it folds to a constant, and the rest, then run both under masks (seven
// divisions per vector where five are needed); this integer minimum on the magnitude's bits (the
// bits of non-negative floats order as the floats do) gives it one path.
inline float clamp_magnitude(float x, float limit) {
  const int32_t bits = float_bits(x);
  const int32_t magnitude = bits & kMagnitudeMask;
  int32_t clamped = magnitude < float_bits(limit) ? magnitude : float_bits(limit);
  clamped = magnitude > kInfinityBits ? magnitude : clamped;
  return bits_float(clamped | (bits & ~kMagnitudeMask));
}
#endif

// exp primitive. On the device the CUDA library's expf/exp; on the host a branch-free
// polynomial (max error about 2 ulp for |x| <= 87.3, clamped beyond: the activations below
// saturate long before) that compilers vectorise, unlike libm's expf. float is the activation
// type of every storage type except double.
LSTM_HOST_DEVICE float exp_primitive(float x) {
#if defined(__CUDA_ARCH__)
  return expf(x);
#else
  // exp(x) = 2^n * exp(r), n = round(x / ln2), |r| <= ln2 / 2 (Cephes expf coefficients). The
  // clamp keeps n in [-126, 126], where 2^n is one normal float (and keeps NaN). Above it the
  // result is +inf, as expf's is from 88.7 on: sigmoid(x) = 1 / (1 + exp(-x)) is then exactly 0
  // below -87.3 and at -inf (as nn.LSTM's), and so is its derivative s * (1 - s).
  const int32_t overflows = -static_cast<int32_t>(x > 87.3365f);
  x = clamp_magnitude(x, 87.3365f);
  // Round to nearest by adding and subtracting 1.5 * 2^23 (|x / ln2| < 2^22 after the clamp):
  // unlike std::floor, this vectorises without SSE4.1 rounding instructions.
  constexpr float kRoundingShift = 12582912.0f;
  const float shifted = x * 1.44269504088896341f + kRoundingShift;
  const float n = shifted - kRoundingShift;
  const float r = (x - n * 0.693359375f) + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  // n as an integer: the low bits of `shifted` (no float-to-int conversion, which a NaN would
  // make undefined; unsigned, so that a NaN's garbage shifts without overflow).
  const uint32_t scale_bits =
      static_cast<uint32_t>(float_bits(shifted) - float_bits(kRoundingShift) + 127) << 23;
  const float result = p * bits_float(static_cast<int32_t>(scale_bits));
  return bits_float((kInfinityBits & overflows) | (float_bits(result) & ~overflows));
#endif
}

LSTM_HOST_DEVICE double exp_primitive(double x) { return exp(x); }

// 1 - 2 / (exp(2x) + 1): one exp, exact limits at +-inf.
template <typename acc_t>
LSTM_HOST_DEVICE acc_t tanh_through_exp(acc_t x) {
  return acc_t(1) - acc_t(2) / (exp_primitive(acc_t(2) * x) + acc_t(1));
}

// tanh. On the device, and in double, through exp. On the host in float, Eigen's rational
// approximation: an odd degree-13 polynomial over an even degree-6 one on [-7.9, 7.9], +-1
// beyond; absolute and relative error under 4e-7 (the exp form's relative error near 0 reaches
// 1e-3). It takes no exp, which makes it the cheaper of the two on the CPU, where the cell is a
// sizeable share of a large batch's forward.
LSTM_HOST_DEVICE float tanh_activation(float x) {
#if defined(__CUDA_ARCH__)
  return tanh_through_exp(x);
#else
  constexpr float kSaturation = 7.90531110763549805f;
  x = clamp_magnitude(x, kSaturation);
  const int32_t x_bits = float_bits(x);
  const float x2 = x * x;
  float p = x2 * -2.76076847742355e-16f + 2.00018790482477e-13f;
  p = p * x2 + -8.60467152213735e-11f;
  p = p * x2 + 5.12229709037114e-08f;
  p = p * x2 + 1.48572235717979e-05f;
  p = p * x2 + 6.37261928875436e-04f;
  p = p * x2 + 4.89352455891786e-03f;
  float q = x2 * 1.19825839466702e-06f + 1.18534705686654e-04f;
  q = q * x2 + 2.26843463243900e-03f;
  q = q * x2 + 4.89352518554385e-03f;
  // At the clamp tanh is within 3e-7 of +-1, and the rational (with FMAs) 6e-8 short of it:
  // +-1 exactly there, so that a saturated gate's derivative 1 - g^2 is 0, as in nn.LSTM.
  // Selected with a mask, not a branch: a conditional division would keep compilers from
  // vectorising the loop for processors without masked vector instructions (AVX2).
  const int32_t saturated =
      -static_cast<int32_t>((x_bits & kMagnitudeMask) == float_bits(kSaturation));
  const int32_t one_bits = (x_bits & ~kMagnitudeMask) | float_bits(1.0f);
  return bits_float((one_bits & saturated) | (float_bits(p * x / q) & ~saturated));
#endif
}

LSTM_HOST_DEVICE double tanh_activation(double x) { return tanh_through_exp(x); }

template <typename acc_t>
LSTM_HOST_DEVICE acc_t sigmoid(acc_t x) {
  return acc_t(1) / (acc_t(1) + exp_primitive(-x));
}

// ---------------------------------------------------------------------------------------------
// The cell: values in, values out (acc_t is the activation type, float for half types).
template <typename acc_t>
struct CellForward {
  acc_t input_gate, forget_gate, cell_gate, output_gate;  // activations i, f, g, o
  acc_t cell;                                             // c_t = f * c_{t-1} + i * g
  acc_t hidden;                                           // h_t = o * tanh(c_t)
};

template <typename acc_t>
LSTM_HOST_DEVICE CellForward<acc_t> lstm_cell_forward(acc_t pre_input, acc_t pre_forget,
                                                      acc_t pre_cell, acc_t pre_output,
                                                      acc_t prev_cell) {
  CellForward<acc_t> out;
  out.input_gate = sigmoid(pre_input);
  out.forget_gate = sigmoid(pre_forget);
  out.cell_gate = tanh_activation(pre_cell);
  out.output_gate = sigmoid(pre_output);
  out.cell = out.forget_gate * prev_cell + out.input_gate * out.cell_gate;
  out.hidden = out.output_gate * tanh_activation(out.cell);
  return out;
}

template <typename acc_t>
struct CellBackward {
  acc_t grad_pre_input, grad_pre_forget, grad_pre_cell, grad_pre_output;  // dL/d(pre-activations)
  acc_t grad_prev_cell;                                                   // dL/dc_{t-1}
};

// grad_hidden = dL/dh_t, grad_cell = dL/dc_t from the later steps (not through h_t).
template <typename acc_t>
LSTM_HOST_DEVICE CellBackward<acc_t> lstm_cell_backward(acc_t input_gate, acc_t forget_gate,
                                                        acc_t cell_gate, acc_t output_gate,
                                                        acc_t prev_cell, acc_t cell,
                                                        acc_t grad_hidden, acc_t grad_cell) {
  const acc_t tanh_cell = tanh_activation(cell);
  const acc_t total_grad_cell =
      grad_cell + grad_hidden * output_gate * (acc_t(1) - tanh_cell * tanh_cell);
  CellBackward<acc_t> out;
  out.grad_pre_input = total_grad_cell * cell_gate * input_gate * (acc_t(1) - input_gate);
  out.grad_pre_forget = total_grad_cell * prev_cell * forget_gate * (acc_t(1) - forget_gate);
  out.grad_pre_cell = total_grad_cell * input_gate * (acc_t(1) - cell_gate * cell_gate);
  out.grad_pre_output = grad_hidden * tanh_cell * output_gate * (acc_t(1) - output_gate);
  out.grad_prev_cell = total_grad_cell * forget_gate;
  return out;
}

// ---------------------------------------------------------------------------------------------
// Forward step: parameters and the indexing of one (row, col).
template <typename scalar_t>
struct ForwardStepParams {
  scalar_t* gates;               // (rows, 4H) in: pre-activations; out: activations i, f, g, o
  const scalar_t* prev_cell;     // (carried_rows, H) c_{t-1} of the carried rows
  const scalar_t* initial_cell;  // (>= rows, H) c0, read for rows >= carried_rows
  scalar_t* cell;                // (rows, H) out: c_t
  scalar_t* hidden;              // (rows, hidden_stride) out: h_t = o * tanh(c_t)
  int64_t rows;
  int64_t hidden_size;           // H
  int64_t hidden_stride;         // row stride of `hidden` (H; larger when it is a view)
  int64_t carried_rows;
  // (4H) b_ih + b_hh, added to the pre-activations here when the GEMMs left it out (the CPU
  // layer kernel's input projection writes its gates without initialising them to the bias);
  // nullptr when the gates already hold it.
  const scalar_t* bias = nullptr;
};

// A pre-activation plus its bias, if the step adds one (see ForwardStepParams::bias).
template <typename scalar_t, typename acc_t>
LSTM_HOST_DEVICE acc_t pre_activation(scalar_t gate, const scalar_t* bias, int64_t index) {
  return bias != nullptr ? static_cast<acc_t>(gate) + static_cast<acc_t>(bias[index])
                         : static_cast<acc_t>(gate);
}

template <typename scalar_t>
LSTM_HOST_DEVICE const scalar_t* prev_cell_row(const scalar_t* prev_cell,
                                               const scalar_t* initial_cell, int64_t carried_rows,
                                               int64_t row, int64_t H) {
  return (row < carried_rows ? prev_cell : initial_cell) + row * H;
}

template <typename scalar_t, typename acc_t>
LSTM_HOST_DEVICE void lstm_forward_element(const ForwardStepParams<scalar_t>& p, int64_t row,
                                           int64_t col) {
  const int64_t H = p.hidden_size;
  scalar_t* gate_row = p.gates + row * 4 * H;
  const CellForward<acc_t> out = lstm_cell_forward<acc_t>(
      pre_activation<scalar_t, acc_t>(gate_row[col], p.bias, col),
      pre_activation<scalar_t, acc_t>(gate_row[H + col], p.bias, H + col),
      pre_activation<scalar_t, acc_t>(gate_row[2 * H + col], p.bias, 2 * H + col),
      pre_activation<scalar_t, acc_t>(gate_row[3 * H + col], p.bias, 3 * H + col),
      static_cast<acc_t>(prev_cell_row(p.prev_cell, p.initial_cell, p.carried_rows, row, H)[col]));
  gate_row[col] = static_cast<scalar_t>(out.input_gate);
  gate_row[H + col] = static_cast<scalar_t>(out.forget_gate);
  gate_row[2 * H + col] = static_cast<scalar_t>(out.cell_gate);
  gate_row[3 * H + col] = static_cast<scalar_t>(out.output_gate);
  p.cell[row * H + col] = static_cast<scalar_t>(out.cell);
  p.hidden[row * p.hidden_stride + col] = static_cast<scalar_t>(out.hidden);
}

// Adds `recurrent`, the four gates' h_{t-1} W_hh^T products of (row, col) in gate order, to the
// step's pre-activations, for lstm_forward_element to run the cell on: kernels that compute
// these products themselves (the persistent CUDA kernel) add them here rather than in a GEMM.
template <typename scalar_t, typename acc_t>
LSTM_HOST_DEVICE void add_recurrent_element(const ForwardStepParams<scalar_t>& p, int64_t row,
                                            int64_t col, const acc_t (&recurrent)[4]) {
  const int64_t H = p.hidden_size;
  scalar_t* gate_row = p.gates + row * 4 * H;
  for (int gate = 0; gate < 4; ++gate) {
    scalar_t& pre_activation = gate_row[gate * H + col];
    pre_activation = static_cast<scalar_t>(static_cast<acc_t>(pre_activation) + recurrent[gate]);
  }
}

// ---------------------------------------------------------------------------------------------
// Backward step: parameters and the indexing of one (row, col).
template <typename scalar_t>
struct BackwardStepParams {
  const scalar_t* gates;                  // (rows, 4H) saved activations i, f, g, o
  const scalar_t* cell;                   // (rows, H) saved c_t
  const scalar_t* prev_cell;              // (carried_rows, H) saved c_{t-1} of the carried rows
  const scalar_t* initial_cell;           // (>= rows, H) c0, read for rows >= carried_rows
  const scalar_t* grad_hidden;            // (rows, grad_hidden_stride) dL/dh_t
  const scalar_t* grad_hidden_recurrent;  // (rows, H) second addend of dL/dh_t, or nullptr
  scalar_t* grad_cell;   // (rows, H) in: dL/dc_t from later steps; out: dL/dc_{t-1}
  scalar_t* grad_gates;  // (rows, 4H) out: dL/d(pre-activations)
  int64_t rows;
  int64_t hidden_size;
  int64_t grad_hidden_stride;
  int64_t carried_rows;
};

template <typename scalar_t, typename acc_t>
LSTM_HOST_DEVICE void lstm_backward_element(const BackwardStepParams<scalar_t>& p, int64_t row,
                                            int64_t col) {
  const int64_t H = p.hidden_size;
  const scalar_t* gate_row = p.gates + row * 4 * H;
  acc_t grad_hidden = static_cast<acc_t>(p.grad_hidden[row * p.grad_hidden_stride + col]);
  if (p.grad_hidden_recurrent != nullptr) {
    grad_hidden += static_cast<acc_t>(p.grad_hidden_recurrent[row * H + col]);
  }
  const CellBackward<acc_t> out = lstm_cell_backward<acc_t>(
      static_cast<acc_t>(gate_row[col]), static_cast<acc_t>(gate_row[H + col]),
      static_cast<acc_t>(gate_row[2 * H + col]), static_cast<acc_t>(gate_row[3 * H + col]),
      static_cast<acc_t>(prev_cell_row(p.prev_cell, p.initial_cell, p.carried_rows, row, H)[col]),
      static_cast<acc_t>(p.cell[row * H + col]), grad_hidden,
      static_cast<acc_t>(p.grad_cell[row * H + col]));
  scalar_t* grad_gate_row = p.grad_gates + row * 4 * H;
  grad_gate_row[col] = static_cast<scalar_t>(out.grad_pre_input);
  grad_gate_row[H + col] = static_cast<scalar_t>(out.grad_pre_forget);
  grad_gate_row[2 * H + col] = static_cast<scalar_t>(out.grad_pre_cell);
  grad_gate_row[3 * H + col] = static_cast<scalar_t>(out.grad_pre_output);
  p.grad_cell[row * H + col] = static_cast<scalar_t>(out.grad_prev_cell);
}

// ---------------------------------------------------------------------------------------------
// Vector variants: kWidth consecutive columns [col, col + kWidth) of one row, with one aligned
// vector load or store per operand, and the same cell functions and indexing as the element
// functions above (tests/test_cuda.py checks on the host that both give identical results).
// Preconditions, checked by the caller: col, H and the row strides are multiples of kWidth, and
// every pointer of the params is aligned to kWidth * sizeof(scalar_t).
template <typename T, int kWidth>
struct alignas(sizeof(T) * kWidth) AlignedVector {
  T lane[kWidth];
};

template <int kWidth, typename T>
LSTM_HOST_DEVICE AlignedVector<T, kWidth> load_vector(const T* address) {
#if defined(__CUDA_ARCH__)
  return *reinterpret_cast<const AlignedVector<T, kWidth>*>(address);
#else
  AlignedVector<T, kWidth> vector;
  std::memcpy(&vector, address, sizeof(vector));
  return vector;
#endif
}

template <int kWidth, typename T>
LSTM_HOST_DEVICE void store_vector(T* address, const AlignedVector<T, kWidth>& vector) {
#if defined(__CUDA_ARCH__)
  *reinterpret_cast<AlignedVector<T, kWidth>*>(address) = vector;
#else
  std::memcpy(address, &vector, sizeof(vector));
#endif
}

template <typename scalar_t, typename acc_t, int kWidth>
LSTM_HOST_DEVICE void lstm_forward_vector(const ForwardStepParams<scalar_t>& p, int64_t row,
                                          int64_t col) {
  using Vector = AlignedVector<scalar_t, kWidth>;
  const int64_t H = p.hidden_size;
  scalar_t* gate_row = p.gates + row * 4 * H;
  Vector input_gate = load_vector<kWidth>(gate_row + col);
  Vector forget_gate = load_vector<kWidth>(gate_row + H + col);
  Vector cell_gate = load_vector<kWidth>(gate_row + 2 * H + col);
  Vector output_gate = load_vector<kWidth>(gate_row + 3 * H + col);
  const Vector prev_cell =
      load_vector<kWidth>(prev_cell_row(p.prev_cell, p.initial_cell, p.carried_rows, row, H) + col);
  Vector cell;
  Vector hidden;
  for (int lane = 0; lane < kWidth; ++lane) {
    const CellForward<acc_t> out = lstm_cell_forward<acc_t>(
        pre_activation<scalar_t, acc_t>(input_gate.lane[lane], p.bias, col + lane),
        pre_activation<scalar_t, acc_t>(forget_gate.lane[lane], p.bias, H + col + lane),
        pre_activation<scalar_t, acc_t>(cell_gate.lane[lane], p.bias, 2 * H + col + lane),
        pre_activation<scalar_t, acc_t>(output_gate.lane[lane], p.bias, 3 * H + col + lane),
        static_cast<acc_t>(prev_cell.lane[lane]));
    input_gate.lane[lane] = static_cast<scalar_t>(out.input_gate);
    forget_gate.lane[lane] = static_cast<scalar_t>(out.forget_gate);
    cell_gate.lane[lane] = static_cast<scalar_t>(out.cell_gate);
    output_gate.lane[lane] = static_cast<scalar_t>(out.output_gate);
    cell.lane[lane] = static_cast<scalar_t>(out.cell);
    hidden.lane[lane] = static_cast<scalar_t>(out.hidden);
  }
  store_vector<kWidth>(gate_row + col, input_gate);
  store_vector<kWidth>(gate_row + H + col, forget_gate);
  store_vector<kWidth>(gate_row + 2 * H + col, cell_gate);
  store_vector<kWidth>(gate_row + 3 * H + col, output_gate);
  store_vector<kWidth>(p.cell + row * H + col, cell);
  store_vector<kWidth>(p.hidden + row * p.hidden_stride + col, hidden);
}

template <typename scalar_t, typename acc_t, int kWidth>
LSTM_HOST_DEVICE void lstm_backward_vector(const BackwardStepParams<scalar_t>& p, int64_t row,
                                           int64_t col) {
  using Vector = AlignedVector<scalar_t, kWidth>;
  const int64_t H = p.hidden_size;
  const scalar_t* gate_row = p.gates + row * 4 * H;
  const Vector input_gate = load_vector<kWidth>(gate_row + col);
  const Vector forget_gate = load_vector<kWidth>(gate_row + H + col);
  const Vector cell_gate = load_vector<kWidth>(gate_row + 2 * H + col);
  const Vector output_gate = load_vector<kWidth>(gate_row + 3 * H + col);
  const Vector prev_cell =
      load_vector<kWidth>(prev_cell_row(p.prev_cell, p.initial_cell, p.carried_rows, row, H) + col);
  const Vector cell = load_vector<kWidth>(p.cell + row * H + col);
  const Vector grad_hidden = load_vector<kWidth>(p.grad_hidden + row * p.grad_hidden_stride + col);
  Vector grad_hidden_recurrent{};
  if (p.grad_hidden_recurrent != nullptr) {
    grad_hidden_recurrent = load_vector<kWidth>(p.grad_hidden_recurrent + row * H + col);
  }
  Vector grad_cell = load_vector<kWidth>(p.grad_cell + row * H + col);
  Vector grad_input;
  Vector grad_forget;
  Vector grad_cell_gate;
  Vector grad_output;
  for (int lane = 0; lane < kWidth; ++lane) {
    acc_t total_grad_hidden = static_cast<acc_t>(grad_hidden.lane[lane]);
    if (p.grad_hidden_recurrent != nullptr) {
      total_grad_hidden += static_cast<acc_t>(grad_hidden_recurrent.lane[lane]);
    }
    const CellBackward<acc_t> out = lstm_cell_backward<acc_t>(
        static_cast<acc_t>(input_gate.lane[lane]), static_cast<acc_t>(forget_gate.lane[lane]),
        static_cast<acc_t>(cell_gate.lane[lane]), static_cast<acc_t>(output_gate.lane[lane]),
        static_cast<acc_t>(prev_cell.lane[lane]), static_cast<acc_t>(cell.lane[lane]),
        total_grad_hidden, static_cast<acc_t>(grad_cell.lane[lane]));
    grad_input.lane[lane] = static_cast<scalar_t>(out.grad_pre_input);
    grad_forget.lane[lane] = static_cast<scalar_t>(out.grad_pre_forget);
    grad_cell_gate.lane[lane] = static_cast<scalar_t>(out.grad_pre_cell);
    grad_output.lane[lane] = static_cast<scalar_t>(out.grad_pre_output);
    grad_cell.lane[lane] = static_cast<scalar_t>(out.grad_prev_cell);
  }
  scalar_t* grad_gate_row = p.grad_gates + row * 4 * H;
  store_vector<kWidth>(grad_gate_row + col, grad_input);
  store_vector<kWidth>(grad_gate_row + H + col, grad_forget);
  store_vector<kWidth>(grad_gate_row + 2 * H + col, grad_cell_gate);
  store_vector<kWidth>(grad_gate_row + 3 * H + col, grad_output);
  store_vector<kWidth>(p.grad_cell + row * H + col, grad_cell);
}

}  // namespace lstm_ext

// Smoke test of the CPU microkernels (csrc/cpu/microkernels.h) at every ISA level this processor
// runs, against scalar references in double: small_gemm, dot_gemm (float and bfloat16 weights),
// transpose, and the forward and backward cells, on shapes with vector tails and ragged column
// ranges, checking too that nothing outside the outputs is written. Also the ISA levels
// (isa.h: ARM64 has "neon" alone) and the cache sizes. Built with microkernels_*.cpp, isa.cpp
// and cache_sizes.cpp and linked against libc10; tools/cross_build_aarch64.sh --run
// cross-compiles it for ARM64 and runs it under qemu-user. Exits non-zero on a failure.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "cpu/cache_sizes.h"
#include "cpu/isa.h"
#include "cpu/microkernels.h"

namespace {

using lstm_ext::BackwardStepParams;
using lstm_ext::ForwardStepParams;
using lstm_ext::cpu::DotGemmParams;
using lstm_ext::cpu::Microkernels;
using lstm_ext::cpu::SmallGemmParams;

int failures = 0;
int64_t checks = 0;

void check(bool ok, const std::string& what) {
  ++checks;
  if (!ok && failures++ < 20) std::printf("FAILED: %s\n", what.c_str());
}

std::mt19937 generator(20240611);

std::vector<float> random_floats(size_t count, float low = -1.0f, float high = 1.0f) {
  std::uniform_real_distribution<float> uniform(low, high);
  std::vector<float> values(count);
  for (float& value : values) value = uniform(generator);
  return values;
}

// |got - want| within `relative` of `scale` (the sum of the magnitudes that made `want`) + 1e-6.
bool close(double got, double want, double scale, double relative = 1e-5) {
  return std::fabs(got - want) <= relative * scale + 1e-6;
}

std::string shape(const std::string& name, std::initializer_list<int64_t> sizes) {
  std::string text = name;
  for (int64_t size : sizes) text += " " + std::to_string(size);
  return text;
}

void check_small_gemm(const Microkernels& k) {
  for (int64_t rows = 1; rows <= lstm_ext::cpu::kSmallRows; ++rows) {
    for (int64_t blocks : {1, 4}) {
      for (int64_t K : {1, 7, 33}) {
        for (int64_t col_begin : {0, 3}) {
          for (int64_t width : {1, 5, 37, 64}) {
            for (bool add_C : {false, true}) {
              const int64_t col_end = col_begin + width, block = col_end + 5;
              const int64_t lda = K + 1, ldb = 4 * block + 3, ldc = 4 * block + 1;
              const std::vector<float> A = random_floats(rows * lda), B = random_floats(K * ldb);
              std::vector<float> C = random_floats(rows * ldc);
              const std::vector<float> C0 = C;
              k.small_gemm(SmallGemmParams{rows, blocks, block, block, col_begin, col_end, K,
                                           A.data(), lda, B.data(), ldb, C.data(), ldc, add_C});
              bool ok = true;
              for (int64_t r = 0; r < rows; ++r) {
                for (int64_t c = 0; c < ldc; ++c) {
                  const int64_t b = c / block, col = c % block;
                  if (b >= blocks || col < col_begin || col >= col_end) {
                    ok = ok && C[r * ldc + c] == C0[r * ldc + c];
                    continue;
                  }
                  double want = add_C ? C0[r * ldc + c] : 0.0, scale = std::fabs(want);
                  for (int64_t i = 0; i < K; ++i) {
                    const double term = double(A[r * lda + i]) * B[i * ldb + b * block + col];
                    want += term;
                    scale += std::fabs(term);
                  }
                  ok = ok && close(C[r * ldc + c], want, scale);
                }
              }
              check(ok, shape("small_gemm rows blocks K col_begin width add_C",
                              {rows, blocks, K, col_begin, width, add_C}));
            }
          }
        }
      }
    }
  }
}

template <typename weight_t>
void check_dot_gemm(const Microkernels& k) {
  const bool bfloat16 = sizeof(weight_t) == 2;
  for (int64_t rows = 1; rows <= lstm_ext::cpu::kSmallRows; ++rows) {
    for (int64_t n : {1, 9, 20}) {
      for (int64_t K : {1, 3, 4, 17, 64, 67}) {
        for (bool add_C : {false, true}) {
          const int64_t lda = K + 1, ldw = K + 2, ldc = n + 3;
          const std::vector<float> A = random_floats(rows * lda), W_floats = random_floats(n * ldw);
          const std::vector<weight_t> W(W_floats.begin(), W_floats.end());
          std::vector<float> C = random_floats(rows * ldc);
          const std::vector<float> C0 = C;
          const DotGemmParams<weight_t> params{rows,     n,   K,        A.data(), lda,
                                               W.data(), ldw, C.data(), ldc,      add_C};
          if constexpr (sizeof(weight_t) == 2) {
            k.dot_gemm_bfloat16(params);
          } else {
            k.dot_gemm_float(params);
          }
          bool ok = true;
          for (int64_t r = 0; r < rows; ++r) {
            for (int64_t c = 0; c < ldc; ++c) {
              if (c >= n) {
                ok = ok && C[r * ldc + c] == C0[r * ldc + c];
                continue;
              }
              double want = add_C ? C0[r * ldc + c] : 0.0, scale = std::fabs(want);
              for (int64_t i = 0; i < K; ++i) {
                const double term = double(A[r * lda + i]) * static_cast<float>(W[c * ldw + i]);
                want += term;
                scale += std::fabs(term);
              }
              ok = ok && close(C[r * ldc + c], want, scale);
            }
          }
          check(ok, shape(bfloat16 ? "dot_gemm_bfloat16 rows n K add_C"
                                   : "dot_gemm_float rows n K add_C",
                          {rows, n, K, add_C}));
        }
      }
    }
  }
}

void check_transpose(const Microkernels& k) {
  for (int64_t rows : {1, 7, 8, 9, 17, 24}) {
    for (int64_t cols : {1, 7, 8, 9, 17, 24}) {
      const int64_t ld_src = cols + 1, ld_dst = rows + 2;
      const std::vector<float> src = random_floats(rows * ld_src);
      std::vector<float> dst = random_floats(cols * ld_dst);
      const std::vector<float> dst0 = dst;
      k.transpose(src.data(), ld_src, rows, cols, dst.data(), ld_dst);
      bool ok = true;
      for (int64_t c = 0; c < cols; ++c) {
        for (int64_t r = 0; r < ld_dst; ++r) {
          ok = ok && dst[c * ld_dst + r] == (r < rows ? src[r * ld_src + c] : dst0[c * ld_dst + r]);
        }
      }
      check(ok, shape("transpose rows cols", {rows, cols}));
    }
  }
}

double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

// Rows [0, rows) x columns [col_begin, col_end) of a step of `rows` rows (the first
// `carried_rows` carried), H hidden units, against the cell's math in double.
void check_cells(const Microkernels& k) {
  const int64_t rows = 3, carried_rows = 2, H = 13, hidden_stride = H + 3;
  for (int64_t col_begin : {0, 1}) {
    for (int64_t col_end : {H - 1, H}) {
      for (bool with_bias : {false, true}) {
        std::vector<float> gates = random_floats(rows * 4 * H, -4.0f, 4.0f);
        const std::vector<float> pre = gates, bias = random_floats(4 * H);
        const std::vector<float> prev_cell = random_floats(carried_rows * H, -2.0f, 2.0f);
        const std::vector<float> initial_cell = random_floats(rows * H, -2.0f, 2.0f);
        std::vector<float> cell = random_floats(rows * H);
        std::vector<float> hidden = random_floats(rows * hidden_stride);
        const std::vector<float> cell0 = cell, hidden0 = hidden;
        ForwardStepParams<float> forward{gates.data(),
                                         prev_cell.data(),
                                         initial_cell.data(),
                                         cell.data(),
                                         hidden.data(),
                                         rows,
                                         H,
                                         hidden_stride,
                                         carried_rows,
                                         with_bias ? bias.data() : nullptr};
        k.forward_cell(forward, 0, rows, col_begin, col_end);
        bool ok = true;
        for (int64_t r = 0; r < rows; ++r) {
          for (int64_t c = 0; c < hidden_stride; ++c) {
            if (c >= H || c < col_begin || c >= col_end) {
              ok = ok && hidden[r * hidden_stride + c] == hidden0[r * hidden_stride + c];
              if (c < H) {
                ok = ok && cell[r * H + c] == cell0[r * H + c];
                for (int64_t g = 0; g < 4; ++g) {
                  ok = ok && gates[r * 4 * H + g * H + c] == pre[r * 4 * H + g * H + c];
                }
              }
              continue;
            }
            double activation[4];
            for (int64_t g = 0; g < 4; ++g) {
              const double x =
                  double(pre[r * 4 * H + g * H + c]) + (with_bias ? bias[g * H + c] : 0.0);
              activation[g] = g == 2 ? std::tanh(x) : sigmoid(x);
              ok = ok && close(gates[r * 4 * H + g * H + c], activation[g], 1.0);
            }
            const double c_prev = r < carried_rows ? prev_cell[r * H + c] : initial_cell[r * H + c];
            const double c_t = activation[1] * c_prev + activation[0] * activation[2];
            ok = ok && close(cell[r * H + c], c_t, 1.0 + std::fabs(c_prev));
            ok = ok && close(hidden[r * hidden_stride + c], activation[3] * std::tanh(c_t), 1.0);
          }
        }
        check(ok, shape("forward_cell col_begin col_end bias", {col_begin, col_end, with_bias}));

        // The backward cell over the activations just computed.
        const int64_t grad_hidden_stride = H + 2;
        for (bool with_recurrent : {false, true}) {
          const std::vector<float> grad_hidden = random_floats(rows * grad_hidden_stride);
          const std::vector<float> grad_recurrent = random_floats(rows * H);
          std::vector<float> grad_cell = random_floats(rows * H);
          std::vector<float> grad_gates = random_floats(rows * 4 * H);
          const std::vector<float> grad_cell0 = grad_cell, grad_gates0 = grad_gates;
          BackwardStepParams<float> backward{gates.data(),
                                             cell.data(),
                                             prev_cell.data(),
                                             initial_cell.data(),
                                             grad_hidden.data(),
                                             with_recurrent ? grad_recurrent.data() : nullptr,
                                             grad_cell.data(),
                                             grad_gates.data(),
                                             rows,
                                             H,
                                             grad_hidden_stride,
                                             carried_rows};
          k.backward_cell(backward, 0, rows, col_begin, col_end);
          bool backward_ok = true;
          for (int64_t r = 0; r < rows; ++r) {
            for (int64_t c = 0; c < H; ++c) {
              if (c < col_begin || c >= col_end) {
                backward_ok = backward_ok && grad_cell[r * H + c] == grad_cell0[r * H + c];
                for (int64_t g = 0; g < 4; ++g) {
                  const int64_t index = r * 4 * H + g * H + c;
                  backward_ok = backward_ok && grad_gates[index] == grad_gates0[index];
                }
                continue;
              }
              const double i = gates[r * 4 * H + c], f = gates[r * 4 * H + H + c],
                           g = gates[r * 4 * H + 2 * H + c], o = gates[r * 4 * H + 3 * H + c];
              const double c_prev =
                  r < carried_rows ? prev_cell[r * H + c] : initial_cell[r * H + c];
              const double tanh_c = std::tanh(double(cell[r * H + c]));
              const double dh = double(grad_hidden[r * grad_hidden_stride + c]) +
                                (with_recurrent ? grad_recurrent[r * H + c] : 0.0);
              const double dc = grad_cell0[r * H + c] + dh * o * (1 - tanh_c * tanh_c);
              const double want[4] = {dc * g * i * (1 - i), dc * c_prev * f * (1 - f),
                                      dc * i * (1 - g * g), dh * tanh_c * o * (1 - o)};
              for (int64_t gate = 0; gate < 4; ++gate) {
                backward_ok =
                    backward_ok && close(grad_gates[r * 4 * H + gate * H + c], want[gate], 8.0);
              }
              backward_ok = backward_ok && close(grad_cell[r * H + c], dc * f, 4.0);
            }
          }
          check(backward_ok, shape("backward_cell col_begin col_end bias recurrent",
                                   {col_begin, col_end, with_bias, with_recurrent}));
        }
      }
    }
  }
}

}  // namespace

int main() {
  namespace cpu = lstm_ext::cpu;
  const std::vector<std::string> isas = cpu::supported_isas();
  std::string names;
  for (const std::string& isa : isas) names += (names.empty() ? "" : ", ") + isa;
#if defined(__aarch64__)
  check(isas == std::vector<std::string>{"neon"},
        "ARM64's ISA levels are neon alone, got " + names);
  check(cpu::avx2_microkernels() == nullptr && cpu::avx512_microkernels() == nullptr,
        "no x86 microkernels on ARM64");
#endif
  check(!isas.empty() && cpu::select_isa("default") == isas.front(),
        "\"default\" selects the baseline");
  const cpu::CacheSizes& caches = cpu::cache_sizes();
  check(caches.l1d > 0 && caches.l2 >= caches.l1d,
        "cache sizes L1 " + std::to_string(caches.l1d) + ", L2 " + std::to_string(caches.l2));
  for (const std::string& isa : isas) {
    check(cpu::select_isa(isa) == isa, "select_isa(" + isa + ")");
    const Microkernels& kernels = cpu::microkernels();
    check(kernels.isa == isa, "microkernels() at " + isa);
    const int before = failures;
    check_small_gemm(kernels);
    check_dot_gemm<float>(kernels);
    check_dot_gemm<c10::BFloat16>(kernels);
    check_transpose(kernels);
    check_cells(kernels);
    std::printf("microkernels_smoke: %s (%lld floats per vector): %s\n", isa.c_str(),
                static_cast<long long>(kernels.vector_floats),
                failures == before ? "ok" : "FAILED");
  }
  std::printf("microkernels_smoke: %lld checks, %d failed (levels: %s; L1 %lld KiB, L2 %lld KiB)\n",
              static_cast<long long>(checks), failures, names.c_str(),
              static_cast<long long>(caches.l1d >> 10), static_cast<long long>(caches.l2 >> 10));
  return failures == 0 ? 0 : 1;
}

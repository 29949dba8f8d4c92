// The one-hot stem as a table: every device gathers from the same table, built here once.
#pragma once
#include <cstddef>
#include <vector>

#include "basenji2_fast/bf16.h"
#include "basenji2_fast/numerics.h"

namespace b2f {

// Stem input codes: A,C,G,T = 0..3, N = 4, uniform 0.25 = 5, outside the sequence = 6.
constexpr int kStemCodes = 7;
constexpr unsigned char kCodeOutside = 6;

// table[t][code][j] = sum_ch act(onehot(code)[ch]) * kernel[t][ch][j] for j < cout, zero for
// cout <= j < padded, summed in double. The (GELU-activated) one-hot input takes only these
// values, so the stem needs additions only. kernel: [k][4][cout] (Keras layout, BN folded),
// fp32 or bf16 bit patterns (kernel_bf16).
// n_uniform: N (code 4) is 0.25 per channel like code 5, else zeros like code 6.
inline std::vector<float> stem_table(const void* kernel, bool kernel_bf16, int k, int cout, int padded, Gelu g, bool n_uniform) {
  const double a1 = gelu(1.0, g), aq = gelu(0.25, g);
  std::vector<float> table(size_t(k) * kStemCodes * padded, 0.f);
  for (int t = 0; t < k; ++t)
    for (int code = 0; code < kStemCodes; ++code)
      for (int j = 0; j < cout; ++j) {
        double v = 0.0;
        const auto w = [&](int ch) { return double(weight_at(kernel, kernel_bf16, (size_t(t) * 4 + ch) * cout + j)); };
        if (code < 4) v = a1 * w(code);
        else if (code == 5 || (code == 4 && n_uniform)) v = aq * (w(0) + w(1) + w(2) + w(3));
        table[(size_t(t) * kStemCodes + code) * padded + j] = float(v);
      }
  return table;
}

}  // namespace b2f

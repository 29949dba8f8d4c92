// Portable C++ kernels: the fallback for any CPU and the baseline the others must equal.
#define B2F_ISA_NS generic
#include "tiles.h"

namespace b2f {
namespace cpu {
namespace generic {
namespace {

constexpr int MR = 4;
constexpr int NR = 16;

template <int MR>
void conv_tile(const ConvArgs& a, int64_t p, int panel, float* tile) {
  float acc[MR][NR] = {};
  const int64_t s = a.in_stride;
  const float* wp = a.w + int64_t(panel) * a.k * a.cin * NR;
  for (int t = 0; t < a.k; ++t) {
    const float* x = a.in + (p + int64_t(t - a.k / 2) * a.dil) * s;
    const float* wt = wp + int64_t(t) * a.cin * NR;
    for (int c = 0; c < a.cin; ++c) {
      const float* w = wt + c * NR;
      for (int i = 0; i < MR; ++i) {
        const float xi = x[i * s + c];
        for (int j = 0; j < NR; ++j) acc[i][j] += xi * w[j];
      }
    }
  }
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) tile[i * NR + j] = acc[i][j];
}

void conv(const ConvArgs& a) {
  conv_tiles<MR, NR>(a, [&](auto rows, int64_t p, int panel, float* tile) { conv_tile<decltype(rows)::value>(a, p, panel, tile); },
                     [](const Epilogue& e, float* t, int r, int64_t p, int c0, int nc) { epilogue_scalar<NR>(e, t, r, p, c0, nc); });
}

void sum_rows(const float* const* rows, int k, float* out) {
  for (int j = 0; j < NR; ++j) out[j] = 0.f;
  for (int t = 0; t < k; ++t)
    for (int j = 0; j < NR; ++j) out[j] += rows[t][j];
}

// Lambdas, not function references, so that the compiler inlines them into the tile loop.
void stem(const StemArgs& a) {
  stem_tiles<MR, NR>(a, [](const float* const* rows, int k, float* out) { sum_rows(rows, k, out); },
                     [](const Epilogue& e, float* t, int r, int64_t p, int c0, int nc) { epilogue_scalar<NR>(e, t, r, p, c0, nc); });
}

}  // namespace
}  // namespace generic

const KernelSet& kernels_generic() {
  static const KernelSet k{"generic", generic::NR, generic::conv, generic::stem};
  return k;
}

}  // namespace cpu
}  // namespace b2f

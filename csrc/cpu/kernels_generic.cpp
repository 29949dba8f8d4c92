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
  const float* wp = static_cast<const float*>(a.w) + int64_t(panel) * a.k * a.cin * NR;
  for (int t = 0; t < a.k; ++t) {
    const float* x = static_cast<const float*>(a.in) + (p + int64_t(t - a.k / 2) * a.dil) * s;
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

// bf16 input and weights (channel pairs, see bf16_weight_index), widened exactly to fp32;
// per output the products are added in channel order, as the fp32 kernel does.
template <int MR>
void conv_tile_bf16(const ConvArgs& a, int64_t p, int panel, float* tile) {
  float acc[MR][NR] = {};
  const int64_t s = a.in_stride;
  const int pairs = (a.cin + 1) / 2;
  const uint16_t* wp = static_cast<const uint16_t*>(a.w) + int64_t(panel) * a.k * pairs * NR * 2;
  for (int t = 0; t < a.k; ++t) {
    const uint16_t* x = static_cast<const uint16_t*>(a.in) + (p + int64_t(t - a.k / 2) * a.dil) * s;
    const uint16_t* wt = wp + int64_t(t) * pairs * NR * 2;
    for (int c2 = 0; c2 < pairs; ++c2) {
      const uint16_t* w = wt + c2 * NR * 2;
      const int c = 2 * c2;
      const bool two = c + 1 < a.cin;  // an odd cin's last pair has one real channel
      for (int i = 0; i < MR; ++i) {
        const float x0 = bf16_to_f32(x[i * s + c]), x1 = two ? bf16_to_f32(x[i * s + c + 1]) : 0.f;
        for (int j = 0; j < NR; ++j) acc[i][j] += x0 * bf16_to_f32(w[2 * j]);
        for (int j = 0; j < NR; ++j) acc[i][j] += x1 * bf16_to_f32(w[2 * j + 1]);
      }
    }
  }
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) tile[i * NR + j] = acc[i][j];
}

void conv(const ConvArgs& a) {
  const auto epi = [](const Epilogue& e, float* t, int r, int64_t p, int c0, int nc) { epilogue_scalar<NR>(e, t, r, p, c0, nc); };
  if (a.bf16)
    conv_tiles<MR, NR>(a, [&](auto rows, int64_t p, int panel, float* tile) { conv_tile_bf16<decltype(rows)::value>(a, p, panel, tile); }, epi);
  else
    conv_tiles<MR, NR>(a, [&](auto rows, int64_t p, int panel, float* tile) { conv_tile<decltype(rows)::value>(a, p, panel, tile); }, epi);
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

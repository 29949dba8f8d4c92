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

template <int... Rs>
void conv_tile_rows(const ConvArgs& a, int64_t p, int rows, int panel, float* tile,
                    std::integer_sequence<int, Rs...>) {
  // Full tiles use the widest register block; a sequence's tail gets an exact-size one.
  ((rows == Rs + 1 ? conv_tile<Rs + 1>(a, p, panel, tile) : void()), ...);
}

void conv(const ConvArgs& a) {
  for_each_tile<MR, NR>(a.p0, a.p1, a.cout, a.threads, conv_chunk<MR>(a), [&](int64_t p, int rows, int panel) {
    alignas(64) float tile[MR * NR];
    conv_tile_rows(a, p, rows, panel, tile, std::make_integer_sequence<int, MR>{});
    const int col0 = panel * NR;
    epilogue_scalar<NR>(a.epi, tile, rows, p, col0, std::min(NR, a.cout - col0));
  });
}

void stem(const StemArgs& a) { stem_tiles<MR, NR>(a, epilogue_scalar<NR>); }

}  // namespace
}  // namespace generic

const KernelSet& kernels_generic() {
  static const KernelSet k{"generic", generic::NR, generic::conv, generic::stem};
  return k;
}

}  // namespace cpu
}  // namespace b2f

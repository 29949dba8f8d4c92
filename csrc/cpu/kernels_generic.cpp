// Portable C++ kernels: the fallback for any CPU and the baseline the others must equal.
#define B2F_ISA_NS generic
#define B2F_VEC_BYTES 16  // SSE2, the x86-64 baseline (also fine elsewhere)
#include "tiles.h"

namespace b2f {
namespace cpu {
namespace generic {
namespace {

constexpr int MR = 4;
constexpr int NR = 16;

template <int R>
void micro(const float* x, int64_t xs, int64_t ts, const float* w, int taps, int cin, float* out, int64_t ldt) {
  float acc[R][NR] = {};
  for (int t = 0; t < taps; ++t) {
    const float* xt = x + t * ts;
    const float* wt = w + int64_t(t) * cin * NR;
    for (int c = 0; c < cin; ++c) {
      const float* wc = wt + c * NR;
      for (int i = 0; i < R; ++i) {
        const float xi = xt[i * xs + c];
        for (int j = 0; j < NR; ++j) acc[i][j] += xi * wc[j];
      }
    }
  }
  for (int i = 0; i < R; ++i)
    for (int j = 0; j < NR; ++j) out[i * ldt + j] = acc[i][j];
}

// bf16 input and weights (channel pairs, see bf16_weight_index), widened exactly to fp32;
// per output the products are added in channel order, as the fp32 kernel does.
template <int R>
void micro(const uint16_t* x, int64_t xs, int64_t ts, const uint16_t* w, int taps, int cin, float* out, int64_t ldt) {
  float acc[R][NR] = {};
  const int pairs = (cin + 1) / 2;
  for (int t = 0; t < taps; ++t) {
    const uint16_t* xt = x + t * ts;
    const uint16_t* wt = w + int64_t(t) * pairs * NR * 2;
    for (int c2 = 0; c2 < pairs; ++c2) {
      const uint16_t* wc = wt + c2 * NR * 2;
      const int c = 2 * c2;
      const bool two = c + 1 < cin;  // an odd cin's last pair has one real channel
      for (int i = 0; i < R; ++i) {
        const float x0 = bf16_to_f32(xt[i * xs + c]), x1 = two ? bf16_to_f32(xt[i * xs + c + 1]) : 0.f;
        for (int j = 0; j < NR; ++j) acc[i][j] += x0 * bf16_to_f32(wc[2 * j]);
        for (int j = 0; j < NR; ++j) acc[i][j] += x1 * bf16_to_f32(wc[2 * j + 1]);
      }
    }
  }
  for (int i = 0; i < R; ++i)
    for (int j = 0; j < NR; ++j) out[i * ldt + j] = acc[i][j];
}

void sum_rows(const float* const* rows, int k, float* out) {
  for (int j = 0; j < NR; ++j) out[j] = 0.f;
  for (int t = 0; t < k; ++t)
    for (int j = 0; j < NR; ++j) out[j] += rows[t][j];
}

struct Kernels {
  static constexpr int MR = generic::MR, NR = generic::NR;
  template <int R, typename T>
  static void micro(const T* x, int64_t xs, int64_t ts, const T* w, int taps, int cin, float* out, int64_t ldt) {
    generic::micro<R>(x, xs, ts, w, taps, cin, out, ldt);
  }
  static void epilogue(const Epilogue& e, float* t, int r, int64_t p, int c0, int nc) {
    epilogue_scalar<NR>(e, t, r, p, c0, nc);
  }
  static void sum_rows(const float* const* rows, int k, float* out) { generic::sum_rows(rows, k, out); }
};

void conv(const ConvArgs& a) { run_conv<Kernels>(a); }
void stem(const StemArgs& a) { run_stem<Kernels>(a); }

}  // namespace
}  // namespace generic

const KernelSet& kernels_generic() {
  static const KernelSet k{"generic", generic::NR, generic::conv, generic::stem};
  return k;
}

}  // namespace cpu
}  // namespace b2f

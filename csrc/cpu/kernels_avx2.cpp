// AVX2 + FMA kernels: a 6 x 16 register-blocked implicit-GEMM micro-kernel (12 ymm
// accumulators, 2 weight vectors, 1 broadcast) over channels-last rows, and a vectorised
// epilogue. Compiled with -mavx2 -mfma only; chosen at run time.
#include <immintrin.h>

#define B2F_ISA_NS avx2
#include "tiles.h"

namespace b2f {
namespace cpu {
namespace avx2 {
namespace {

constexpr int MR = 6;
constexpr int NR = 16;

inline __m256 set1(float v) { return _mm256_set1_ps(v); }

// exp(x): x = n ln2 + r, Cephes degree-6 polynomial, 2^n built in the exponent bits.
// The clamp keeps n in the normal range; below it e^x is ~1e-38, which is 0 for our uses.
inline __m256 exp_ps(__m256 x) {
  x = _mm256_min_ps(_mm256_max_ps(x, set1(-87.0f)), set1(88.0f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, set1(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, set1(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, set1(-2.12194440e-4f), r);
  __m256 p = set1(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, set1(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, set1(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, set1(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, set1(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, set1(5.0000001201e-1f));
  p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, set1(1.f)));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

// log(y) for y in [1, 2]: Cephes logf polynomial around 1.
inline __m256 log_1_2_ps(__m256 y) {
  const __m256 big = _mm256_cmp_ps(y, set1(1.41421356f), _CMP_GT_OQ);
  const __m256 e = _mm256_and_ps(big, set1(1.f));
  const __m256 x = _mm256_sub_ps(_mm256_blendv_ps(y, _mm256_mul_ps(y, set1(0.5f)), big), set1(1.f));
  const __m256 z = _mm256_mul_ps(x, x);
  __m256 p = set1(7.0376836292e-2f);
  p = _mm256_fmadd_ps(p, x, set1(-1.1514610310e-1f));
  p = _mm256_fmadd_ps(p, x, set1(1.1676998740e-1f));
  p = _mm256_fmadd_ps(p, x, set1(-1.2420140846e-1f));
  p = _mm256_fmadd_ps(p, x, set1(1.4249322787e-1f));
  p = _mm256_fmadd_ps(p, x, set1(-1.6668057665e-1f));
  p = _mm256_fmadd_ps(p, x, set1(2.0000714765e-1f));
  p = _mm256_fmadd_ps(p, x, set1(-2.4999993993e-1f));
  p = _mm256_fmadd_ps(p, x, set1(3.3333331174e-1f));
  p = _mm256_mul_ps(_mm256_mul_ps(p, x), z);
  p = _mm256_fmadd_ps(e, set1(-2.12194440e-4f), p);
  p = _mm256_fmadd_ps(z, set1(-0.5f), p);
  return _mm256_fmadd_ps(e, set1(0.693359375f), _mm256_add_ps(x, p));
}

inline __m256 abs_ps(__m256 x) { return _mm256_andnot_ps(set1(-0.f), x); }

inline __m256 softplus_ps(__m256 x) {
  const __m256 t = exp_ps(_mm256_xor_ps(abs_ps(x), set1(-0.f)));
  return _mm256_add_ps(_mm256_max_ps(x, _mm256_setzero_ps()), log_1_2_ps(_mm256_add_ps(t, set1(1.f))));
}

// erfc(z) for z >= 0 (Numerical Recipes' Chebyshev fit, fractional error < 1.2e-7).
inline __m256 erfc_pos_ps(__m256 z) {
  const __m256 t = _mm256_div_ps(set1(1.f), _mm256_fmadd_ps(z, set1(0.5f), set1(1.f)));
  __m256 p = set1(0.17087277f);
  p = _mm256_fmadd_ps(p, t, set1(-0.82215223f));
  p = _mm256_fmadd_ps(p, t, set1(1.48851587f));
  p = _mm256_fmadd_ps(p, t, set1(-1.13520398f));
  p = _mm256_fmadd_ps(p, t, set1(0.27886807f));
  p = _mm256_fmadd_ps(p, t, set1(-0.18628806f));
  p = _mm256_fmadd_ps(p, t, set1(0.09678418f));
  p = _mm256_fmadd_ps(p, t, set1(0.37409196f));
  p = _mm256_fmadd_ps(p, t, set1(1.00002368f));
  p = _mm256_fmadd_ps(p, t, set1(-1.26551223f));
  p = _mm256_fnmadd_ps(z, z, p);
  return _mm256_mul_ps(t, exp_ps(p));
}

inline __m256 gelu_ps(__m256 x, Gelu v) {
  const __m256 one = set1(1.f);
  switch (v) {
    case Gelu::Sigmoid:
      return _mm256_div_ps(x, _mm256_add_ps(one, exp_ps(_mm256_mul_ps(x, set1(-kGeluSigmoidScale)))));
    case Gelu::Erf: {
      // 0.5 x erfc(-x / sqrt 2); erfc(-u) = 2 - erfc(u) for u > 0.
      const __m256 u = _mm256_mul_ps(x, set1(-kSqrtHalf));
      const __m256 c = erfc_pos_ps(abs_ps(u));
      const __m256 neg = _mm256_cmp_ps(u, _mm256_setzero_ps(), _CMP_LT_OQ);
      const __m256 ec = _mm256_blendv_ps(c, _mm256_sub_ps(set1(2.f), c), neg);
      return _mm256_mul_ps(_mm256_mul_ps(set1(0.5f), x), ec);
    }
    default: {
      // tanh(u) = 1 - 2 / (e^{2u} + 1)
      const __m256 u = _mm256_mul_ps(set1(kSqrt2OverPi),
                                     _mm256_fmadd_ps(_mm256_mul_ps(set1(kGeluTanhCubic), x), _mm256_mul_ps(x, x), x));
      const __m256 th = _mm256_sub_ps(one, _mm256_div_ps(set1(2.f), _mm256_add_ps(exp_ps(_mm256_add_ps(u, u)), one)));
      return _mm256_mul_ps(_mm256_mul_ps(set1(0.5f), x), _mm256_add_ps(one, th));
    }
  }
}

// Lane mask for the first n (0..8) of 8 columns.
inline __m256i col_mask(int ncols, int half) {
  const int n = std::min(8, std::max(0, ncols - 8 * half));
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// Masked moves are slow on some x86 cores (AMD's are microcoded), so only a panel's
// ragged tail uses them.
inline __m256 load_cols(const float* p, bool full, __m256i m) {
  return full ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, m);
}
inline void store_cols(float* p, bool full, __m256i m, __m256 v) {
  if (full) _mm256_storeu_ps(p, v);
  else _mm256_maskstore_ps(p, m, v);
}

// fp32 -> bf16, rounded to nearest even (finite values; GELU outputs are), stored as the
// first n (1..8) of 8 columns.
inline void store_bf16(uint16_t* p, int n, __m256 v) {
  const __m256i u = _mm256_castps_si256(v);
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
  const __m256i r = _mm256_srli_epi32(_mm256_add_epi32(u, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7FFF))), 16);
  const __m128i h = _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1));
  if (n >= 8) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), h);
  } else {
    alignas(16) uint16_t tmp[8];
    _mm_store_si128(reinterpret_cast<__m128i*>(tmp), h);
    std::memcpy(p, tmp, sizeof(uint16_t) * size_t(n));
  }
}

void epilogue(const Epilogue& e, float* tile, int rows, int64_t p, int col0, int ncols) {
  const int halves = ncols > 8 ? 2 : 1;
  const __m256i m[2] = {col_mask(ncols, 0), col_mask(ncols, 1)};
  const bool full[2] = {ncols >= 8, ncols >= 16};
  const int step = e.pool;
  for (int i = 0; i < rows; i += step) {
    for (int h = 0; h < halves; ++h) {
      const int c = col0 + 8 * h;
      const __m256 b = _mm256_loadu_ps(e.bias + c);
      __m256 v = _mm256_add_ps(_mm256_load_ps(tile + i * NR + 8 * h), b);
      if (e.res) v = _mm256_add_ps(v, load_cols(e.res + (p + i) * e.res_stride + c, full[h], m[h]));
      if (step == 2) {
        __m256 v2 = _mm256_add_ps(_mm256_load_ps(tile + (i + 1) * NR + 8 * h), b);
        if (e.res) v2 = _mm256_add_ps(v2, load_cols(e.res + (p + i + 1) * e.res_stride + c, full[h], m[h]));
        v = _mm256_max_ps(v, v2);
      }
      const int64_t j = (p + i) / step;
      if (e.out)
        store_cols(e.out + j * e.out_stride + c, full[h], m[h], e.out_act == OutAct::Softplus ? softplus_ps(v) : v);
      if (e.act && e.act_bf16)
        store_bf16(static_cast<uint16_t*>(e.act) + j * e.act_stride + c, ncols - 8 * h, gelu_ps(v, e.gelu));
      else if (e.act)
        store_cols(static_cast<float*>(e.act) + j * e.act_stride + c, full[h], m[h], gelu_ps(v, e.gelu));
    }
  }
}

// fp32 micro-kernel (tiles.h): 6 x 16 register block, 12 accumulators.
template <int R>
void micro(const float* x, int64_t xs, int64_t ts, const float* w, int taps, int cin, float* out, int64_t ldt) {
  __m256 acc0[R], acc1[R];
#pragma GCC unroll 6
  for (int i = 0; i < R; ++i) acc0[i] = acc1[i] = _mm256_setzero_ps();
  for (int t = 0; t < taps; ++t) {
    const float* xt = x + t * ts;
    const float* wt = w + int64_t(t) * cin * NR;
    for (int c = 0; c < cin; ++c, wt += NR, ++xt) {
      const __m256 w0 = _mm256_loadu_ps(wt), w1 = _mm256_loadu_ps(wt + 8);
#pragma GCC unroll 6
      for (int i = 0; i < R; ++i) {
        const __m256 xi = _mm256_broadcast_ss(xt + i * xs);
        acc0[i] = _mm256_fmadd_ps(xi, w0, acc0[i]);
        acc1[i] = _mm256_fmadd_ps(xi, w1, acc1[i]);
      }
    }
  }
#pragma GCC unroll 6
  for (int i = 0; i < R; ++i) {
    _mm256_store_ps(out + i * ldt, acc0[i]);
    _mm256_store_ps(out + i * ldt + 8, acc1[i]);
  }
}

// bf16 input and weight pairs (bf16_weight_index), widened to fp32 in registers: a 32-bit
// lane holding channels (c, c + 1) gives channel c shifted into the high half and channel
// c + 1 with the low half masked off. Channel c's FMAs run before channel c + 1's, the fp32
// kernel's order. Inputs are broadcast as whole pairs straight from memory; an odd cin's
// last pair reads its one channel alone (the next element belongs to another row).
template <int R>
void micro(const uint16_t* x, int64_t xs, int64_t ts, const uint16_t* w, int taps, int cin, float* out, int64_t ldt) {
  __m256 acc0[R], acc1[R];
#pragma GCC unroll 6
  for (int i = 0; i < R; ++i) acc0[i] = acc1[i] = _mm256_setzero_ps();
  const __m256i hi = _mm256_set1_epi32(int(0xFFFF0000u));
  const int pairs = (cin + 1) / 2, full_pairs = cin / 2;
  for (int t = 0; t < taps; ++t) {
    const uint16_t* xt = x + t * ts;
    const uint16_t* wt = w + int64_t(t) * pairs * NR * 2;
    for (int c2 = 0; c2 < full_pairs; ++c2, wt += NR * 2, xt += 2) {
      const __m256i r0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wt));
      const __m256i r1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wt + 16));
      {
        const __m256 w0 = _mm256_castsi256_ps(_mm256_slli_epi32(r0, 16));
        const __m256 w1 = _mm256_castsi256_ps(_mm256_slli_epi32(r1, 16));
#pragma GCC unroll 6
        for (int i = 0; i < R; ++i) {
          const __m256 xi = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_set1_epi32(int(load_pair(xt + i * xs))), 16));
          acc0[i] = _mm256_fmadd_ps(xi, w0, acc0[i]);
          acc1[i] = _mm256_fmadd_ps(xi, w1, acc1[i]);
        }
      }
      {
        const __m256 w0 = _mm256_castsi256_ps(_mm256_and_si256(r0, hi));
        const __m256 w1 = _mm256_castsi256_ps(_mm256_and_si256(r1, hi));
        const uint16_t* xh = reload(xt);
#pragma GCC unroll 6
        for (int i = 0; i < R; ++i) {
          const __m256 xi = _mm256_castsi256_ps(_mm256_and_si256(_mm256_set1_epi32(int(load_pair(xh + i * xs))), hi));
          acc0[i] = _mm256_fmadd_ps(xi, w0, acc0[i]);
          acc1[i] = _mm256_fmadd_ps(xi, w1, acc1[i]);
        }
      }
    }
    if (pairs > full_pairs) {  // odd cin: the last channel, its partner weight zero
      const __m256 w0 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(wt)), 16));
      const __m256 w1 =
          _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(wt + 16)), 16));
#pragma GCC unroll 6
      for (int i = 0; i < R; ++i) {
        const __m256 xi = _mm256_castsi256_ps(_mm256_set1_epi32(int(uint32_t(xt[i * xs]) << 16)));
        acc0[i] = _mm256_fmadd_ps(xi, w0, acc0[i]);
        acc1[i] = _mm256_fmadd_ps(xi, w1, acc1[i]);
      }
    }
  }
#pragma GCC unroll 6
  for (int i = 0; i < R; ++i) {
    _mm256_store_ps(out + i * ldt, acc0[i]);
    _mm256_store_ps(out + i * ldt + 8, acc1[i]);
  }
}

void sum_rows(const float* const* rows, int k, float* out) {
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  for (int t = 0; t < k; ++t) {
    acc0 = _mm256_add_ps(acc0, _mm256_loadu_ps(rows[t]));
    acc1 = _mm256_add_ps(acc1, _mm256_loadu_ps(rows[t] + 8));
  }
  _mm256_store_ps(out, acc0);
  _mm256_store_ps(out + 8, acc1);
}

struct Kernels {
  static constexpr int MR = avx2::MR, NR = avx2::NR;
  template <int R, typename T>
  static void micro(const T* x, int64_t xs, int64_t ts, const T* w, int taps, int cin, float* out, int64_t ldt) {
    avx2::micro<R>(x, xs, ts, w, taps, cin, out, ldt);
  }
  static void epilogue(const Epilogue& e, float* t, int r, int64_t p, int c0, int nc) { avx2::epilogue(e, t, r, p, c0, nc); }
  static void sum_rows(const float* const* rows, int k, float* out) { avx2::sum_rows(rows, k, out); }
};

void conv(const ConvArgs& a) { run_conv<Kernels>(a); }
void stem(const StemArgs& a) { run_stem<Kernels>(a); }

}  // namespace
}  // namespace avx2

const KernelSet& kernels_avx2() {
  static const KernelSet k{"avx2", avx2::NR, avx2::conv, avx2::stem};
  return k;
}

}  // namespace cpu
}  // namespace b2f

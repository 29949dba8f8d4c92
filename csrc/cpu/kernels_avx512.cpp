// AVX-512F kernels: a 14 x 32 register-blocked implicit-GEMM micro-kernel (28 zmm
// accumulators) over channels-last rows, and a vectorised epilogue (bias, residual,
// max-pool, softplus, GELU). Compiled with -mavx512f -mfma only; chosen at run time.
// bf16 convs widen bf16 pairs to fp32 in registers; kernels_avx512bf16.cpp compiles this
// same file with -mavx512bf16, where they use vdpbf16ps instead (B2F_USE_DPBF16).
#include <immintrin.h>

#ifndef B2F_ISA_NS
#define B2F_ISA_NS avx512
#define B2F_KERNELS_FN kernels_avx512
#define B2F_KERNELS_NAME "avx512"
#endif
#define B2F_VEC_BYTES 64  // zmm
#include "tiles.h"

namespace b2f {
namespace cpu {
namespace B2F_ISA_NS {
namespace {

constexpr int MR = 14;
constexpr int NR = 32;

// exp(x), Cephes-style: x = n ln2 + r, |r| <= ln2/2, degree-6 polynomial, then 2^n by
// scalef (which also handles underflow to 0). Relative error ~1e-7.
inline __m512 exp_ps(__m512 x) {
  x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-103.f)), _mm512_set1_ps(88.7f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.f)));
  return _mm512_scalef_ps(p, n);
}

// log(y) for y in [1, 2] (all softplus needs): Cephes logf polynomial around 1.
inline __m512 log_1_2_ps(__m512 y) {
  const __mmask16 big = _mm512_cmp_ps_mask(y, _mm512_set1_ps(1.41421356f), _CMP_GT_OQ);
  const __m512 e = _mm512_maskz_mov_ps(big, _mm512_set1_ps(1.f));
  const __m512 x = _mm512_sub_ps(_mm512_mask_mul_ps(y, big, y, _mm512_set1_ps(0.5f)), _mm512_set1_ps(1.f));
  const __m512 z = _mm512_mul_ps(x, x);
  __m512 p = _mm512_set1_ps(7.0376836292e-2f);
  p = _mm512_fmadd_ps(p, x, _mm512_set1_ps(-1.1514610310e-1f));
  p = _mm512_fmadd_ps(p, x, _mm512_set1_ps(1.1676998740e-1f));
  p = _mm512_fmadd_ps(p, x, _mm512_set1_ps(-1.2420140846e-1f));
  p = _mm512_fmadd_ps(p, x, _mm512_set1_ps(1.4249322787e-1f));
  p = _mm512_fmadd_ps(p, x, _mm512_set1_ps(-1.6668057665e-1f));
  p = _mm512_fmadd_ps(p, x, _mm512_set1_ps(2.0000714765e-1f));
  p = _mm512_fmadd_ps(p, x, _mm512_set1_ps(-2.4999993993e-1f));
  p = _mm512_fmadd_ps(p, x, _mm512_set1_ps(3.3333331174e-1f));
  p = _mm512_mul_ps(_mm512_mul_ps(p, x), z);
  p = _mm512_fmadd_ps(e, _mm512_set1_ps(-2.12194440e-4f), p);
  p = _mm512_fmadd_ps(z, _mm512_set1_ps(-0.5f), p);
  return _mm512_fmadd_ps(e, _mm512_set1_ps(0.693359375f), _mm512_add_ps(x, p));
}

inline __m512 softplus_ps(__m512 x) {
  const __m512 absx = _mm512_abs_ps(x);
  const __m512 t = exp_ps(_mm512_sub_ps(_mm512_setzero_ps(), absx));
  return _mm512_add_ps(_mm512_max_ps(x, _mm512_setzero_ps()), log_1_2_ps(_mm512_add_ps(t, _mm512_set1_ps(1.f))));
}

// erfc(z) for z >= 0 (Numerical Recipes' Chebyshev fit, fractional error < 1.2e-7).
inline __m512 erfc_pos_ps(__m512 z) {
  const __m512 t = _mm512_div_ps(_mm512_set1_ps(1.f), _mm512_fmadd_ps(z, _mm512_set1_ps(0.5f), _mm512_set1_ps(1.f)));
  __m512 p = _mm512_set1_ps(0.17087277f);
  p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-0.82215223f));
  p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(1.48851587f));
  p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-1.13520398f));
  p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(0.27886807f));
  p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-0.18628806f));
  p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(0.09678418f));
  p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(0.37409196f));
  p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(1.00002368f));
  p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-1.26551223f));
  p = _mm512_fnmadd_ps(z, z, p);
  return _mm512_mul_ps(t, exp_ps(p));
}

inline __m512 gelu_ps(__m512 x, Gelu v) {
  const __m512 one = _mm512_set1_ps(1.f);
  switch (v) {
    case Gelu::Sigmoid: {
      const __m512 e = exp_ps(_mm512_mul_ps(x, _mm512_set1_ps(-kGeluSigmoidScale)));
      return _mm512_div_ps(x, _mm512_add_ps(one, e));
    }
    case Gelu::Erf: {
      // 0.5 x erfc(-x / sqrt 2); erfc(-u) = 2 - erfc(u) for u > 0.
      const __m512 u = _mm512_mul_ps(x, _mm512_set1_ps(-kSqrtHalf));
      const __m512 c = erfc_pos_ps(_mm512_abs_ps(u));
      const __mmask16 neg = _mm512_cmp_ps_mask(u, _mm512_setzero_ps(), _CMP_LT_OQ);
      const __m512 ec = _mm512_mask_sub_ps(c, neg, _mm512_set1_ps(2.f), c);
      return _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(0.5f), x), ec);
    }
    default: {
      // tanh(u) = 1 - 2 / (e^{2u} + 1)
      const __m512 u = _mm512_mul_ps(_mm512_set1_ps(kSqrt2OverPi),
                                     _mm512_fmadd_ps(_mm512_mul_ps(_mm512_set1_ps(kGeluTanhCubic), x),
                                                     _mm512_mul_ps(x, x), x));
      const __m512 e = exp_ps(_mm512_add_ps(u, u));
      const __m512 th = _mm512_sub_ps(one, _mm512_div_ps(_mm512_set1_ps(2.f), _mm512_add_ps(e, one)));
      return _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(0.5f), x), _mm512_add_ps(one, th));
    }
  }
}

inline __mmask16 col_mask(int ncols, int half) {
  const int n = std::min(16, std::max(0, ncols - 16 * half));
  return n >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << n) - 1u);
}

// fp32 -> bf16 rounded to nearest even (finite values; GELU outputs are), the columns of m.
inline void store_bf16(uint16_t* p, __mmask16 m, __m512 v) {
  const __m512i u = _mm512_castps_si512(v);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
  const __m512i r = _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7FFF))), 16);
  _mm512_mask_cvtepi32_storeu_epi16(p, m, r);
}

void epilogue(const Epilogue& e, float* tile, int rows, int64_t p, int col0, int ncols) {
  const __mmask16 m[2] = {col_mask(ncols, 0), col_mask(ncols, 1)};
  const __m512 b[2] = {_mm512_loadu_ps(e.bias + col0), _mm512_loadu_ps(e.bias + col0 + 16)};
  const int step = e.pool;
  for (int i = 0; i < rows; i += step) {
    for (int h = 0; h < 2; ++h) {
      if (!m[h]) continue;
      __m512 v = _mm512_add_ps(_mm512_load_ps(tile + i * NR + 16 * h), b[h]);
      if (e.res) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m[h], e.res + (p + i) * e.res_stride + col0 + 16 * h));
      if (step == 2) {
        __m512 v2 = _mm512_add_ps(_mm512_load_ps(tile + (i + 1) * NR + 16 * h), b[h]);
        if (e.res)
          v2 = _mm512_add_ps(v2, _mm512_maskz_loadu_ps(m[h], e.res + (p + i + 1) * e.res_stride + col0 + 16 * h));
        v = _mm512_max_ps(v, v2);
      }
      const int64_t j = (p + i) / step;
      if (e.out) {
        const __m512 o = e.out_act == OutAct::Softplus ? softplus_ps(v) : v;
        _mm512_mask_storeu_ps(e.out + j * e.out_stride + col0 + 16 * h, m[h], o);
      }
      if (e.act && e.act_bf16)
        store_bf16(static_cast<uint16_t*>(e.act) + j * e.act_stride + col0 + 16 * h, m[h], gelu_ps(v, e.gelu));
      else if (e.act)
        _mm512_mask_storeu_ps(static_cast<float*>(e.act) + j * e.act_stride + col0 + 16 * h, m[h], gelu_ps(v, e.gelu));
    }
  }
}

// fp32 micro-kernel (tiles.h): 14 x 32 register block, 28 accumulators.
template <int R>
void micro(const float* x, int64_t xs, int64_t ts, const float* w, int taps, int cin, float* out, int64_t ldt) {
  __m512 acc0[R], acc1[R];
#pragma GCC unroll 14
  for (int i = 0; i < R; ++i) acc0[i] = acc1[i] = _mm512_setzero_ps();
  for (int t = 0; t < taps; ++t) {
    const float* xt = x + t * ts;
    const float* wt = w + int64_t(t) * cin * NR;
    for (int c = 0; c < cin; ++c, wt += NR, ++xt) {
      const __m512 w0 = _mm512_loadu_ps(wt), w1 = _mm512_loadu_ps(wt + 16);
#pragma GCC unroll 14
      for (int i = 0; i < R; ++i) {
        const __m512 xi = _mm512_set1_ps(xt[i * xs]);
        acc0[i] = _mm512_fmadd_ps(xi, w0, acc0[i]);
        acc1[i] = _mm512_fmadd_ps(xi, w1, acc1[i]);
      }
    }
  }
#pragma GCC unroll 14
  for (int i = 0; i < R; ++i) {
    _mm512_store_ps(out + i * ldt, acc0[i]);
    _mm512_store_ps(out + i * ldt + 16, acc1[i]);
  }
}

// bf16 input and weight pairs (bf16_weight_index). A 32-bit lane holds channels (c, c + 1)
// of one output column; inputs are broadcast as whole pairs straight from memory, and an
// odd cin's last pair reads its one channel alone (its partner weight is zero, and the
// input's next element belongs to another row).
template <int R>
void micro(const uint16_t* x, int64_t xs, int64_t ts, const uint16_t* w, int taps, int cin, float* out, int64_t ldt) {
  __m512 acc0[R], acc1[R];
#pragma GCC unroll 14
  for (int i = 0; i < R; ++i) acc0[i] = acc1[i] = _mm512_setzero_ps();
  const int pairs = (cin + 1) / 2, full_pairs = cin / 2;
  for (int t = 0; t < taps; ++t) {
    const uint16_t* xt = x + t * ts;
    const uint16_t* wt = w + int64_t(t) * pairs * NR * 2;
    for (int c2 = 0; c2 < pairs; ++c2, wt += NR * 2, xt += 2) {
      const __m512i r0 = _mm512_loadu_si512(wt), r1 = _mm512_loadu_si512(wt + 32);
      const bool two = c2 < full_pairs;
#if defined(B2F_USE_DPBF16)
      // vdpbf16ps: acc += x[c] w[c] + x[c+1] w[c+1] per column, products exact in fp32.
      const __m512bh w0 = (__m512bh)r0, w1 = (__m512bh)r1;
      if (two) {
#pragma GCC unroll 14
        for (int i = 0; i < R; ++i) {
          const __m512bh xi = (__m512bh)_mm512_set1_epi32(int(load_pair(xt + i * xs)));
          acc0[i] = _mm512_dpbf16_ps(acc0[i], xi, w0);
          acc1[i] = _mm512_dpbf16_ps(acc1[i], xi, w1);
        }
      } else {
#pragma GCC unroll 14
        for (int i = 0; i < R; ++i) {
          const __m512bh xi = (__m512bh)_mm512_set1_epi32(int(uint32_t(xt[i * xs])));
          acc0[i] = _mm512_dpbf16_ps(acc0[i], xi, w0);
          acc1[i] = _mm512_dpbf16_ps(acc1[i], xi, w1);
        }
      }
#else
      // Widened in registers: channel c shifted into the high half, channel c + 1 with the
      // low half masked off; channel c's FMAs first, the fp32 kernel's order.
      const __m512i hi = _mm512_set1_epi32(int(0xFFFF0000u));
      {
        const __m512 w0 = _mm512_castsi512_ps(_mm512_slli_epi32(r0, 16));
        const __m512 w1 = _mm512_castsi512_ps(_mm512_slli_epi32(r1, 16));
        if (two) {
#pragma GCC unroll 14
          for (int i = 0; i < R; ++i) {
            const __m512 xi = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_set1_epi32(int(load_pair(xt + i * xs))), 16));
            acc0[i] = _mm512_fmadd_ps(xi, w0, acc0[i]);
            acc1[i] = _mm512_fmadd_ps(xi, w1, acc1[i]);
          }
        } else {
#pragma GCC unroll 14
          for (int i = 0; i < R; ++i) {
            const __m512 xi = _mm512_castsi512_ps(_mm512_set1_epi32(int(uint32_t(xt[i * xs]) << 16)));
            acc0[i] = _mm512_fmadd_ps(xi, w0, acc0[i]);
            acc1[i] = _mm512_fmadd_ps(xi, w1, acc1[i]);
          }
        }
      }
      if (two) {
        const __m512 w0 = _mm512_castsi512_ps(_mm512_and_si512(r0, hi));
        const __m512 w1 = _mm512_castsi512_ps(_mm512_and_si512(r1, hi));
        const uint16_t* xh = reload(xt);
#pragma GCC unroll 14
        for (int i = 0; i < R; ++i) {
          const __m512 xi = _mm512_castsi512_ps(_mm512_and_si512(_mm512_set1_epi32(int(load_pair(xh + i * xs))), hi));
          acc0[i] = _mm512_fmadd_ps(xi, w0, acc0[i]);
          acc1[i] = _mm512_fmadd_ps(xi, w1, acc1[i]);
        }
      }
#endif
    }
  }
#pragma GCC unroll 14
  for (int i = 0; i < R; ++i) {
    _mm512_store_ps(out + i * ldt, acc0[i]);
    _mm512_store_ps(out + i * ldt + 16, acc1[i]);
  }
}

void sum_rows(const float* const* rows, int k, float* out) {
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
  for (int t = 0; t < k; ++t) {
    acc0 = _mm512_add_ps(acc0, _mm512_loadu_ps(rows[t]));
    acc1 = _mm512_add_ps(acc1, _mm512_loadu_ps(rows[t] + 16));
  }
  _mm512_store_ps(out, acc0);
  _mm512_store_ps(out + 16, acc1);
}

struct Kernels {
  static constexpr int MR = B2F_ISA_NS::MR, NR = B2F_ISA_NS::NR;
  template <int R, typename T>
  static void micro(const T* x, int64_t xs, int64_t ts, const T* w, int taps, int cin, float* out, int64_t ldt) {
    B2F_ISA_NS::micro<R>(x, xs, ts, w, taps, cin, out, ldt);
  }
  static void epilogue(const Epilogue& e, float* t, int r, int64_t p, int c0, int nc) {
    B2F_ISA_NS::epilogue(e, t, r, p, c0, nc);
  }
  static void sum_rows(const float* const* rows, int k, float* out) { B2F_ISA_NS::sum_rows(rows, k, out); }
};

void conv(const ConvArgs& a) { run_conv<Kernels>(a); }
void stem(const StemArgs& a) { run_stem<Kernels>(a); }

}  // namespace
}  // namespace B2F_ISA_NS

const KernelSet& B2F_KERNELS_FN() {
  static const KernelSet k{B2F_KERNELS_NAME, B2F_ISA_NS::NR, B2F_ISA_NS::conv, B2F_ISA_NS::stem};
  return k;
}

}  // namespace cpu
}  // namespace b2f

// Vector types per instruction set (in the manner of CTranslate2's Vec<float, ISA>): the
// kernels (math, epilogue, micro-kernels, Winograd transforms: kernels.inc) are written once
// against this interface and compiled in each ISA's translation unit with its own flags.
// Everything here lives in that unit's namespace (B2F_ISA_NS), so that the same inline code
// compiled with different flags is never merged across units by the linker.
//
// Interface of a traits class V (all static inline):
//   reg, lanes                    a vector of `lanes` floats
//   zero, set1, load, store       (unaligned) full vectors
//   load_n, store_n               the first n (< lanes) lanes, the rest zero / untouched
//   broadcast(const float*)       one float in every lane
//   add sub mul div fmadd(a, b, c) = a b + c, fnmadd(a, b, c) = c - a b, max min abs neg
//   mask, gt(a, b), lt(a, b), select(m, a, b) = m ? a : b
//   bits(m), from_bits(b)         the mask as an integer, bit i = lane i, and back
//   round(x)                      to the nearest integer (ties to even)
//   ldexp(p, n)                   p 2^n for rounded n; kExpMin, kExpMax clamp exp's argument to
//   kExpMin, kExpMax              where ldexp is exact (below, e^x is 0 for our uses)
//   load_bf16(p[, n]), store_bf16(p, v[, n])   bf16 widened exactly / rounded to nearest even
//   preg, load_pairs(p), broadcast_pair(p), broadcast_half(p), pair_lo, pair_hi
//                                 bf16 channel pairs (32-bit lanes) of the bf16 micro-kernel
//   kDotBf16, dot_bf16(acc, x, w) acc + x.lo w.lo + x.hi w.hi (vdpbf16ps), where kDotBf16
#pragma once
#include <cstdint>
#include <cstring>

// Forces a helper into its caller: where GCC keeps a call inside a kernel's loop, the
// registers live across it go through memory.
#define B2F_ALWAYS_INLINE inline __attribute__((always_inline))

#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace b2f {
namespace cpu {
namespace B2F_ISA_NS {

// Portable: GCC / Clang vector extensions of 4 floats (SSE2 on x86-64, NEON on ARM). No
// fused multiply-add is assumed: a b + c rounds as the compiler's scalar code would.
struct VecPortable {
  typedef float reg __attribute__((vector_size(16)));
  typedef int32_t ireg __attribute__((vector_size(16)));
  typedef uint32_t preg __attribute__((vector_size(16)));
  typedef ireg mask;
  static constexpr int lanes = 4;
  static constexpr bool kDotBf16 = false;
  static constexpr float kExpMin = -87.f, kExpMax = 88.f;  // 2^n built in the exponent bits

  static reg zero() { return reg{}; }
  static reg set1(float x) { return reg{} + x; }
  static reg load(const float* p) {
    reg v;
    std::memcpy(&v, p, sizeof v);
    return v;
  }
  static void store(float* p, reg v) { std::memcpy(p, &v, sizeof v); }
  static reg load_n(const float* p, int n) {
    reg v{};
    for (int i = 0; i < n; ++i) v[i] = p[i];
    return v;
  }
  static void store_n(float* p, reg v, int n) {
    for (int i = 0; i < n; ++i) p[i] = v[i];
  }
  static reg broadcast(const float* p) { return set1(*p); }
  static reg add(reg a, reg b) { return a + b; }
  static reg sub(reg a, reg b) { return a - b; }
  static reg mul(reg a, reg b) { return a * b; }
  static reg div(reg a, reg b) { return a / b; }
  static reg fmadd(reg a, reg b, reg c) { return a * b + c; }
  static reg fnmadd(reg a, reg b, reg c) { return c - a * b; }
  static reg max(reg a, reg b) { return a > b ? a : b; }
  static reg min(reg a, reg b) { return a < b ? a : b; }
  static reg abs(reg a) { return (reg)((preg)a & 0x7FFFFFFFu); }
  static reg neg(reg a) { return (reg)((preg)a ^ 0x80000000u); }
  static mask gt(reg a, reg b) { return a > b; }
  static mask lt(reg a, reg b) { return a < b; }
  static uint32_t bits(mask m) {
    uint32_t b = 0;
    for (int i = 0; i < lanes; ++i) b |= uint32_t(m[i] != 0) << i;
    return b;
  }
  static mask from_bits(uint32_t b) {
    mask m{};
    for (int i = 0; i < lanes; ++i) m[i] = (b >> i) & 1 ? -1 : 0;
    return m;
  }
  static reg select(mask m, reg a, reg b) { return m ? a : b; }
  static reg round(reg x) {  // adding and removing 1.5 * 2^23 rounds |x| < 2^22 to nearest even
    const reg magic = set1(12582912.f);
    return (x + magic) - magic;
  }
  static reg ldexp(reg p, reg n) {
    const ireg e = (__builtin_convertvector(n, ireg) + 127) << 23;
    return p * (reg)e;
  }
  static reg load_bf16(const uint16_t* p) {
    typedef uint16_t h4 __attribute__((vector_size(8)));
    h4 h;
    std::memcpy(&h, p, sizeof h);
    return (reg)(__builtin_convertvector(h, preg) << 16);
  }
  static reg load_bf16(const uint16_t* p, int n) {
    preg u{};
    for (int i = 0; i < n; ++i) u[i] = uint32_t(p[i]) << 16;
    return (reg)u;
  }
  static preg round_bf16(reg v) {  // the bf16 bits (finite values), in the low halves
    const preg u = (preg)v;
    return (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
  }
  static void store_bf16(uint16_t* p, reg v, int n = lanes) {
    const preg h = round_bf16(v);
    for (int i = 0; i < n; ++i) p[i] = uint16_t(h[i]);
  }
  static preg load_pairs(const uint16_t* p) {
    preg v;
    std::memcpy(&v, p, sizeof v);
    return v;
  }
  static preg broadcast_pair(const uint16_t* p) {
    uint32_t v;
    std::memcpy(&v, p, 4);
    return preg{} + v;
  }
  static preg broadcast_half(const uint16_t* p) { return preg{} + uint32_t(*p); }  // (x, 0)
  static reg pair_lo(preg v) { return (reg)(v << 16); }
  static reg pair_hi(preg v) { return (reg)(v & 0xFFFF0000u); }
};

#if defined(__AVX2__) && defined(__FMA__) && !defined(__AVX512F__)
struct VecAvx2 {
  typedef __m256 reg;
  typedef __m256i preg;
  typedef __m256 mask;
  static constexpr int lanes = 8;
  static constexpr bool kDotBf16 = false;
  // 2^n is built in the exponent bits: n must stay in the normal range.
  static constexpr float kExpMin = -87.f, kExpMax = 88.f;

  static reg zero() { return _mm256_setzero_ps(); }
  static reg set1(float x) { return _mm256_set1_ps(x); }
  static reg load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, reg v) { _mm256_storeu_ps(p, v); }
  // Masked moves are slow on some x86 cores (AMD's are microcoded): only ragged tails use them.
  static __m256i first(int n) { return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)); }
  static reg load_n(const float* p, int n) { return _mm256_maskload_ps(p, first(n)); }
  static void store_n(float* p, reg v, int n) { _mm256_maskstore_ps(p, first(n), v); }
  static reg broadcast(const float* p) { return _mm256_broadcast_ss(p); }
  static reg add(reg a, reg b) { return _mm256_add_ps(a, b); }
  static reg sub(reg a, reg b) { return _mm256_sub_ps(a, b); }
  static reg mul(reg a, reg b) { return _mm256_mul_ps(a, b); }
  static reg div(reg a, reg b) { return _mm256_div_ps(a, b); }
  static reg fmadd(reg a, reg b, reg c) { return _mm256_fmadd_ps(a, b, c); }
  static reg fnmadd(reg a, reg b, reg c) { return _mm256_fnmadd_ps(a, b, c); }
  static reg max(reg a, reg b) { return _mm256_max_ps(a, b); }
  static reg min(reg a, reg b) { return _mm256_min_ps(a, b); }
  static reg abs(reg a) { return _mm256_andnot_ps(_mm256_set1_ps(-0.f), a); }
  static reg neg(reg a) { return _mm256_xor_ps(a, _mm256_set1_ps(-0.f)); }
  static mask gt(reg a, reg b) { return _mm256_cmp_ps(a, b, _CMP_GT_OQ); }
  static mask lt(reg a, reg b) { return _mm256_cmp_ps(a, b, _CMP_LT_OQ); }
  static uint32_t bits(mask m) { return uint32_t(_mm256_movemask_ps(m)); }
  static mask from_bits(uint32_t b) {
    const __m256i lane_bit = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    const __m256i v = _mm256_and_si256(_mm256_set1_epi32(int(b)), lane_bit);
    return _mm256_castsi256_ps(_mm256_cmpeq_epi32(v, lane_bit));
  }
  static reg select(mask m, reg a, reg b) { return _mm256_blendv_ps(b, a, m); }
  static reg round(reg x) { return _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static reg ldexp(reg p, reg n) {
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
  }
  static reg load_bf16(const uint16_t* p) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  }
  static reg load_bf16(const uint16_t* p, int n) {
    alignas(16) uint16_t tmp[8] = {};
    std::memcpy(tmp, p, sizeof(uint16_t) * size_t(n));
    return load_bf16(tmp);
  }
  static void store_bf16(uint16_t* p, reg v, int n = lanes) {
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
  static preg load_pairs(const uint16_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
  static preg broadcast_pair(const uint16_t* p) {
    uint32_t v;
    std::memcpy(&v, p, 4);
    return _mm256_set1_epi32(int(v));
  }
  static preg broadcast_half(const uint16_t* p) { return _mm256_set1_epi32(int(uint32_t(*p))); }
  static reg pair_lo(preg v) { return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16)); }
  static reg pair_hi(preg v) { return _mm256_castsi256_ps(_mm256_and_si256(v, _mm256_set1_epi32(int(0xFFFF0000u)))); }
};
#endif

#if defined(__AVX512F__)
struct VecAvx512 {
  typedef __m512 reg;
  typedef __m512i preg;
  typedef __mmask16 mask;
  static constexpr int lanes = 16;
#if defined(B2F_USE_DPBF16)
  static constexpr bool kDotBf16 = true;
#else
  static constexpr bool kDotBf16 = false;
#endif
  // scalef builds 2^n and handles the underflow to 0 itself.
  static constexpr float kExpMin = -103.f, kExpMax = 88.7f;

  static reg zero() { return _mm512_setzero_ps(); }
  static reg set1(float x) { return _mm512_set1_ps(x); }
  static reg load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, reg v) { _mm512_storeu_ps(p, v); }
  static __mmask16 first(int n) { return n >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << n) - 1u); }
  static reg load_n(const float* p, int n) { return _mm512_maskz_loadu_ps(first(n), p); }
  static void store_n(float* p, reg v, int n) { _mm512_mask_storeu_ps(p, first(n), v); }
  static reg broadcast(const float* p) { return _mm512_set1_ps(*p); }
  static reg add(reg a, reg b) { return _mm512_add_ps(a, b); }
  static reg sub(reg a, reg b) { return _mm512_sub_ps(a, b); }
  static reg mul(reg a, reg b) { return _mm512_mul_ps(a, b); }
  static reg div(reg a, reg b) { return _mm512_div_ps(a, b); }
  static reg fmadd(reg a, reg b, reg c) { return _mm512_fmadd_ps(a, b, c); }
  static reg fnmadd(reg a, reg b, reg c) { return _mm512_fnmadd_ps(a, b, c); }
  static reg max(reg a, reg b) { return _mm512_max_ps(a, b); }
  static reg min(reg a, reg b) { return _mm512_min_ps(a, b); }
  static reg abs(reg a) { return _mm512_abs_ps(a); }
  static reg neg(reg a) {  // the sign bit flipped (xor_ps needs AVX-512 DQ)
    return _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(a), _mm512_set1_epi32(int(0x80000000u))));
  }
  static mask gt(reg a, reg b) { return _mm512_cmp_ps_mask(a, b, _CMP_GT_OQ); }
  static mask lt(reg a, reg b) { return _mm512_cmp_ps_mask(a, b, _CMP_LT_OQ); }
  static uint32_t bits(mask m) { return uint32_t(m); }
  static mask from_bits(uint32_t b) { return mask(b); }
  static reg select(mask m, reg a, reg b) { return _mm512_mask_blend_ps(m, b, a); }
  static reg round(reg x) { return _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static reg ldexp(reg p, reg n) { return _mm512_scalef_ps(p, n); }
  static reg load_bf16(const uint16_t* p) {
    const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  }
  static reg load_bf16(const uint16_t* p, int n) {
    alignas(32) uint16_t tmp[16] = {};
    std::memcpy(tmp, p, sizeof(uint16_t) * size_t(n));
    return load_bf16(tmp);
  }
  static void store_bf16(uint16_t* p, reg v, int n = lanes) {
    const __m512i u = _mm512_castps_si512(v);
    const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    const __m512i r = _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7FFF))), 16);
    _mm512_mask_cvtepi32_storeu_epi16(p, first(n), r);
  }
  static preg load_pairs(const uint16_t* p) { return _mm512_loadu_si512(p); }
  static preg broadcast_pair(const uint16_t* p) {
    uint32_t v;
    std::memcpy(&v, p, 4);
    return _mm512_set1_epi32(int(v));
  }
  static preg broadcast_half(const uint16_t* p) { return _mm512_set1_epi32(int(uint32_t(*p))); }
  static reg pair_lo(preg v) { return _mm512_castsi512_ps(_mm512_slli_epi32(v, 16)); }
  static reg pair_hi(preg v) { return _mm512_castsi512_ps(_mm512_and_si512(v, _mm512_set1_epi32(int(0xFFFF0000u)))); }
#if defined(B2F_USE_DPBF16)
  // vdpbf16ps: acc + x[c] w[c] + x[c+1] w[c+1] per lane, the products exact in fp32.
  static reg dot_bf16(reg acc, preg x, preg w) { return _mm512_dpbf16_ps(acc, (__m512bh)x, (__m512bh)w); }
#else
  static reg dot_bf16(reg acc, preg, preg) { return acc; }  // not used without kDotBf16
#endif
};
#endif

}  // namespace B2F_ISA_NS
}  // namespace cpu
}  // namespace b2f

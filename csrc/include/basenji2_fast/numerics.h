// Numerics shared by every device: GELU variants, softplus, "same"-padding arithmetic.
// Scalar, header-only, usable from C++ and CUDA. The float64 NumPy reference
// (basenji2_fast/reference.py) states the same maths; vector kernels implement these
// formulas with their own instructions and are tested against the reference.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define B2F_HD __host__ __device__ __forceinline__
#else
#define B2F_HD inline
#endif

namespace b2f {

enum class Gelu : int { Sigmoid = 0, Erf = 1, Tanh = 2 };

// basenji's GELU layer: x * sigmoid(1.702 x). The published model was trained with it.
constexpr float kGeluSigmoidScale = 1.702f;
constexpr float kSqrtHalf = 0.70710678118654752f;
constexpr float kSqrt2OverPi = 0.79788456080286536f;
constexpr float kGeluTanhCubic = 0.044715f;

template <typename T>
B2F_HD T gelu(T x, Gelu v) {
  switch (v) {
    case Gelu::Sigmoid: return x / (T(1) + std::exp(-T(kGeluSigmoidScale) * x));
    // erfc keeps the relative precision for negative x, where 1 + erf(x) cancels.
    case Gelu::Erf: return T(0.5) * x * std::erfc(-x * T(kSqrtHalf));
    default: return T(0.5) * x * (T(1) + std::tanh(T(kSqrt2OverPi) * (x + T(kGeluTanhCubic) * x * x * x)));
  }
}

// e^x for float in plain arithmetic and bit moves, which compilers vectorise (a libm call
// per element does not): x = n ln2 + r, Cephes' degree-6 polynomial for e^r, 2^n in the
// exponent bits; relative error below 2e-7 for x in [-87, 88]. Beyond, n and r are clamped
// (not x: GCC does not vectorise that form), giving e^x ~ 1e-38 below and ~ 2e38 above.
// max / min in the form compilers turn into vector max / min instructions.
B2F_HD float max_of(float a, float b) { return a < b ? b : a; }
B2F_HD float min_of(float a, float b) { return b < a ? b : a; }

B2F_HD float exp_fast(float x) {
  // round to nearest by the 1.5 * 2^23 trick (baseline SSE2 has no rounding instruction)
  float n = (x * 1.44269504088896341f + 12582912.f) - 12582912.f;
  n = min_of(max_of(n, -126.f), 127.f);
  float r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  r = min_of(max_of(r, -0.35f), 0.35f);
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + (r + 1.f);
  const int32_t bits = (int32_t(n) + 127) * (1 << 23);
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

// std::exp for double (the reference-grade path), exp_fast for float.
template <typename T>
B2F_HD T exp_of(T x) {
  return std::exp(x);
}
template <>
B2F_HD float exp_of<float>(float x) {
  return exp_fast(x);
}

// d gelu(x) / dx, for the backward pass.
//   sigmoid: s + a x s (1 - s), s = sigmoid(a x), a = 1.702
//   erf:     Phi(x) + x phi(x) = 0.5 erfc(-x / sqrt 2) + x e^{-x^2 / 2} / sqrt(2 pi)
//   tanh:    0.5 (1 + th) + 0.5 x (1 - th^2) sqrt(2 / pi) (1 + 3 c x^2), th = tanh(sqrt(2 / pi) (x + c x^3))
constexpr float kInvSqrt2Pi = 0.39894228040143268f;
template <typename T>
B2F_HD T gelu_grad(T x, Gelu v) {
  switch (v) {
    case Gelu::Sigmoid: {
      const T s = T(1) / (T(1) + exp_of(-T(kGeluSigmoidScale) * x));
      return s + T(kGeluSigmoidScale) * x * s * (T(1) - s);
    }
    case Gelu::Erf: return T(0.5) * std::erfc(-x * T(kSqrtHalf)) + x * T(kInvSqrt2Pi) * exp_of(T(-0.5) * x * x);
    default: {
      const T th = std::tanh(T(kSqrt2OverPi) * (x + T(kGeluTanhCubic) * x * x * x));
      return T(0.5) * (T(1) + th) +
             T(0.5) * x * (T(1) - th * th) * T(kSqrt2OverPi) * (T(1) + T(3) * T(kGeluTanhCubic) * x * x);
    }
  }
}

// log(1 + e^x) without overflow: max(x, 0) + log1p(e^-|x|).
template <typename T>
B2F_HD T softplus(T x) {
  return (x > T(0) ? x : T(0)) + std::log1p(std::exp(-std::fabs(x)));
}

// "same" zero padding of an odd kernel: input positions needed each side of an output.
B2F_HD int64_t conv_halo(int kernel_size, int dilation) { return int64_t(kernel_size / 2) * dilation; }

// What the epilogue writes after the accumulation. Sigmoid, softplus' derivative, is the
// backward pass's (the gradient of a softplus head).
enum class OutAct : int { None = 0, Softplus = 1, Sigmoid = 2 };

}  // namespace b2f

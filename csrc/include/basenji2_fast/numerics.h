// Numerics shared by every device: GELU variants, softplus, "same"-padding arithmetic.
// Scalar, header-only, usable from C++ and CUDA. The float64 NumPy reference
// (basenji2_fast/reference.py) states the same maths; vector kernels implement these
// formulas with their own instructions and are tested against the reference.
#pragma once
#include <cmath>
#include <cstdint>

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

// d gelu(x) / dx, for the backward pass.
//   sigmoid: s + a x s (1 - s), s = sigmoid(a x), a = 1.702
//   erf:     Phi(x) + x phi(x) = 0.5 erfc(-x / sqrt 2) + x e^{-x^2 / 2} / sqrt(2 pi)
//   tanh:    0.5 (1 + th) + 0.5 x (1 - th^2) sqrt(2 / pi) (1 + 3 c x^2), th = tanh(sqrt(2 / pi) (x + c x^3))
constexpr float kInvSqrt2Pi = 0.39894228040143268f;
template <typename T>
B2F_HD T gelu_grad(T x, Gelu v) {
  switch (v) {
    case Gelu::Sigmoid: {
      const T s = T(1) / (T(1) + std::exp(-T(kGeluSigmoidScale) * x));
      return s + T(kGeluSigmoidScale) * x * s * (T(1) - s);
    }
    case Gelu::Erf: return T(0.5) * std::erfc(-x * T(kSqrtHalf)) + x * T(kInvSqrt2Pi) * std::exp(T(-0.5) * x * x);
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

// d softplus(x) / dx = sigmoid(x) (exp overflows to inf for very negative x: the result is 0).
template <typename T>
B2F_HD T softplus_grad(T x) {
  return T(1) / (T(1) + std::exp(-x));
}

// "same" zero padding of an odd kernel: input positions needed each side of an output.
B2F_HD int64_t conv_halo(int kernel_size, int dilation) { return int64_t(kernel_size / 2) * dilation; }

// What the epilogue writes after the accumulation.
enum class OutAct : int { None = 0, Softplus = 1 };

}  // namespace b2f

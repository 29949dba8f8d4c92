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

// log(1 + e^x) without overflow: max(x, 0) + log1p(e^-|x|).
template <typename T>
B2F_HD T softplus(T x) {
  return (x > T(0) ? x : T(0)) + std::log1p(std::exp(-std::fabs(x)));
}

// "same" zero padding of an odd kernel: input positions needed each side of an output.
B2F_HD int64_t conv_halo(int kernel_size, int dilation) { return int64_t(kernel_size / 2) * dilation; }

// What the epilogue writes after the accumulation.
enum class OutAct : int { None = 0, Softplus = 1 };

}  // namespace b2f

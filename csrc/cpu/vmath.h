// Vector math of the epilogues, written once against the traits of vec.h: exp, log on [1, 2],
// softplus, erfc, and the three GELU variants of numerics.h and their derivatives. Single
// precision, errors ~1e-7 relative (the float64 reference bounds them in the tests).
#pragma once
#include "basenji2_fast/numerics.h"
#include "vec.h"

namespace b2f {
namespace cpu {
namespace B2F_ISA_NS {

// exp(x): x = n ln2 + r, Cephes degree-6 polynomial in r, then p 2^n (V::ldexp). The clamp
// keeps 2^n exact; below it e^x is ~1e-38, which is 0 for our uses.
template <class V>
B2F_ALWAYS_INLINE typename V::reg vexp(typename V::reg x) {
  using R = typename V::reg;
  x = V::min(V::max(x, V::set1(V::kExpMin)), V::set1(V::kExpMax));
  const R n = V::round(V::mul(x, V::set1(1.44269504088896341f)));
  R r = V::fnmadd(n, V::set1(0.693359375f), x);
  r = V::fnmadd(n, V::set1(-2.12194440e-4f), r);
  R p = V::set1(1.9875691500e-4f);
  p = V::fmadd(p, r, V::set1(1.3981999507e-3f));
  p = V::fmadd(p, r, V::set1(8.3334519073e-3f));
  p = V::fmadd(p, r, V::set1(4.1665795894e-2f));
  p = V::fmadd(p, r, V::set1(1.6666665459e-1f));
  p = V::fmadd(p, r, V::set1(5.0000001201e-1f));
  p = V::fmadd(p, V::mul(r, r), V::add(r, V::set1(1.f)));
  return V::ldexp(p, n);
}

// log(y) for y in [1, 2] (all softplus needs): Cephes logf polynomial around 1.
template <class V>
inline typename V::reg vlog_1_2(typename V::reg y) {
  using R = typename V::reg;
  const auto big = V::gt(y, V::set1(1.41421356f));
  const R e = V::select(big, V::set1(1.f), V::zero());
  const R x = V::sub(V::select(big, V::mul(y, V::set1(0.5f)), y), V::set1(1.f));
  const R z = V::mul(x, x);
  R p = V::set1(7.0376836292e-2f);
  p = V::fmadd(p, x, V::set1(-1.1514610310e-1f));
  p = V::fmadd(p, x, V::set1(1.1676998740e-1f));
  p = V::fmadd(p, x, V::set1(-1.2420140846e-1f));
  p = V::fmadd(p, x, V::set1(1.4249322787e-1f));
  p = V::fmadd(p, x, V::set1(-1.6668057665e-1f));
  p = V::fmadd(p, x, V::set1(2.0000714765e-1f));
  p = V::fmadd(p, x, V::set1(-2.4999993993e-1f));
  p = V::fmadd(p, x, V::set1(3.3333331174e-1f));
  p = V::mul(V::mul(p, x), z);
  p = V::fmadd(e, V::set1(-2.12194440e-4f), p);
  p = V::fmadd(z, V::set1(-0.5f), p);
  return V::fmadd(e, V::set1(0.693359375f), V::add(x, p));
}

// log(1 + e^x) without overflow: max(x, 0) + log(1 + e^-|x|).
template <class V>
inline typename V::reg vsoftplus(typename V::reg x) {
  const typename V::reg t = vexp<V>(V::neg(V::abs(x)));
  return V::add(V::max(x, V::zero()), vlog_1_2<V>(V::add(t, V::set1(1.f))));
}

// 1 / (1 + e^-x), softplus' derivative.
template <class V>
inline typename V::reg vsigmoid(typename V::reg x) {
  const typename V::reg one = V::set1(1.f);
  return V::div(one, V::add(one, vexp<V>(V::neg(x))));
}

// erfc(z) for z >= 0 (Numerical Recipes' Chebyshev fit, fractional error < 1.2e-7).
template <class V>
inline typename V::reg verfc_pos(typename V::reg z) {
  using R = typename V::reg;
  const R t = V::div(V::set1(1.f), V::fmadd(z, V::set1(0.5f), V::set1(1.f)));
  R p = V::set1(0.17087277f);
  p = V::fmadd(p, t, V::set1(-0.82215223f));
  p = V::fmadd(p, t, V::set1(1.48851587f));
  p = V::fmadd(p, t, V::set1(-1.13520398f));
  p = V::fmadd(p, t, V::set1(0.27886807f));
  p = V::fmadd(p, t, V::set1(-0.18628806f));
  p = V::fmadd(p, t, V::set1(0.09678418f));
  p = V::fmadd(p, t, V::set1(0.37409196f));
  p = V::fmadd(p, t, V::set1(1.00002368f));
  p = V::fmadd(p, t, V::set1(-1.26551223f));
  p = V::fnmadd(z, z, p);
  return V::mul(t, vexp<V>(p));
}

// The published model's sigmoid GELU, x / (1 + e^(-a x)).
template <class V>
B2F_ALWAYS_INLINE typename V::reg vgelu_sigmoid(typename V::reg x) {
  return V::div(x, V::add(V::set1(1.f), vexp<V>(V::mul(x, V::set1(-kGeluSigmoidScale)))));
}

template <class V>
inline typename V::reg vgelu(typename V::reg x, Gelu variant) {
  using R = typename V::reg;
  const R one = V::set1(1.f);
  switch (variant) {
    case Gelu::Sigmoid:
      return vgelu_sigmoid<V>(x);
    case Gelu::Erf: {
      // 0.5 x erfc(-x / sqrt 2); erfc(-u) = 2 - erfc(u) for u > 0.
      const R u = V::mul(x, V::set1(-kSqrtHalf));
      const R c = verfc_pos<V>(V::abs(u));
      const R ec = V::select(V::lt(u, V::zero()), V::sub(V::set1(2.f), c), c);
      return V::mul(V::mul(V::set1(0.5f), x), ec);
    }
    default: {
      // tanh(u) = 1 - 2 / (e^{2u} + 1)
      const R u = V::mul(V::set1(kSqrt2OverPi), V::fmadd(V::mul(V::set1(kGeluTanhCubic), x), V::mul(x, x), x));
      const R th = V::sub(one, V::div(V::set1(2.f), V::add(vexp<V>(V::add(u, u)), one)));
      return V::mul(V::mul(V::set1(0.5f), x), V::add(one, th));
    }
  }
}

// vgelu for the epilogues' loops: the sigmoid form inlined (vgelu with its other variants is
// too large for GCC to inline, and a call per vector spills the epilogue's live registers),
// the others called. Bit-identical to vgelu.
template <class V>
B2F_ALWAYS_INLINE typename V::reg vgelu_fused(typename V::reg x, Gelu variant) {
  return variant == Gelu::Sigmoid ? vgelu_sigmoid<V>(x) : vgelu<V>(x, variant);
}

// The sigmoid GELU's derivative from ax = a x and s = sigmoid(a x): s + a x s (1 - s).
template <class V>
inline typename V::reg vgelu_sigmoid_grad(typename V::reg ax, typename V::reg s) {
  return V::fmadd(s, V::mul(ax, V::sub(V::set1(1.f), s)), s);
}

// d gelu(x) / dx (numerics.h's gelu_grad, the backward pass's GELU'), the forms of vgelu.
template <class V>
inline typename V::reg vgelu_grad(typename V::reg x, Gelu variant) {
  using R = typename V::reg;
  const R one = V::set1(1.f), half = V::set1(0.5f);
  switch (variant) {
    case Gelu::Sigmoid: {
      const R ax = V::mul(x, V::set1(kGeluSigmoidScale));
      return vgelu_sigmoid_grad<V>(ax, vsigmoid<V>(ax));
    }
    case Gelu::Erf: {  // 0.5 erfc(-x / sqrt 2) + x e^{-x^2 / 2} / sqrt(2 pi)
      const R u = V::mul(x, V::set1(-kSqrtHalf));
      const R c = verfc_pos<V>(V::abs(u));
      const R ec = V::select(V::lt(u, V::zero()), V::sub(V::set1(2.f), c), c);
      const R phi = V::mul(V::set1(kInvSqrt2Pi), vexp<V>(V::mul(V::mul(x, x), V::set1(-0.5f))));
      return V::fmadd(x, phi, V::mul(half, ec));
    }
    default: {  // 0.5 (1 + th) + 0.5 x (1 - th^2) sqrt(2 / pi) (1 + 3 c x^2)
      const R x2 = V::mul(x, x);
      const R u = V::mul(V::set1(kSqrt2OverPi), V::fmadd(V::mul(V::set1(kGeluTanhCubic), x), x2, x));
      const R th = V::sub(one, V::div(V::set1(2.f), V::add(vexp<V>(V::add(u, u)), one)));
      const R du = V::mul(V::set1(kSqrt2OverPi), V::fmadd(V::set1(3.f * kGeluTanhCubic), x2, one));
      const R dth = V::mul(V::fnmadd(th, th, one), du);
      return V::fmadd(V::mul(half, x), dth, V::mul(half, V::add(one, th)));
    }
  }
}

// vgelu(x), returned, and vgelu_grad(x) into grad, each bit-identical to its own function:
// the sigmoid form's two share one exp (exp(-a x) is the same value either way: a product and
// its negation round alike); the other forms compute each as alone.
template <class V>
inline typename V::reg vgelu_and_grad(typename V::reg x, Gelu variant, typename V::reg& grad) {
  using R = typename V::reg;
  if (variant != Gelu::Sigmoid) {
    grad = vgelu_grad<V>(x, variant);
    return vgelu<V>(x, variant);
  }
  const R one = V::set1(1.f);
  const R d = V::add(one, vexp<V>(V::mul(x, V::set1(-kGeluSigmoidScale))));  // 1 + exp(-a x), as both
  grad = vgelu_sigmoid_grad<V>(V::mul(x, V::set1(kGeluSigmoidScale)), V::div(one, d));
  return V::div(x, d);
}

}  // namespace B2F_ISA_NS
}  // namespace cpu
}  // namespace b2f

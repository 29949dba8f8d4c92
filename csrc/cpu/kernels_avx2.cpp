// AVX2 + FMA kernels (tiles.h over vec.h's VecAvx2): a 6 x 16 register tile (12 ymm
// accumulators, 2 weight vectors, 1 broadcast). Compiled with -mavx2 -mfma only; chosen at
// run time.
#define B2F_ISA_NS avx2
#include "tiles.h"

namespace b2f {
namespace cpu {

const KernelSet& kernels_avx2() {
  using K = avx2::KernelsOf<avx2::VecAvx2, 6, 16>;
  static const KernelSet k{"avx2", K::NR, avx2::run_conv<K>, avx2::run_stem<K>,
                                 avx2::run_dgelu_mul<K::Vec>};
  return k;
}

}  // namespace cpu
}  // namespace b2f

// Portable kernels (tiles.h over vec.h's VecPortable, 4-float vectors): the fallback for any
// CPU. A 6 x 8 register tile: 12 accumulators, 2 weight vectors and a broadcast fit the 16
// registers of SSE2 (and of NEON's 32).
#define B2F_ISA_NS generic
#include "tiles.h"

namespace b2f {
namespace cpu {

const KernelSet& kernels_generic() {
  using K = generic::KernelsOf<generic::VecPortable, 6, 8>;
  static const KernelSet k{"generic", K::NR, generic::run_conv<K>, generic::run_stem<K>,
                                 generic::run_dgelu_mul<K::Vec>};
  return k;
}

}  // namespace cpu
}  // namespace b2f

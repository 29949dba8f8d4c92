// AVX-512F kernels (tiles.h over vec.h's VecAvx512): a 14 x 32 register tile (28 zmm
// accumulators). Compiled with -mavx512f -mfma only; chosen at run time. bf16 convolutions
// widen bf16 pairs to fp32 in registers; kernels_avx512bf16.cpp compiles this same file with
// -mavx512bf16, where they use vdpbf16ps instead (B2F_USE_DPBF16).
#ifndef B2F_ISA_NS
#define B2F_ISA_NS avx512
#define B2F_KERNELS_FN kernels_avx512
#define B2F_KERNELS_NAME "avx512"
#endif
#include "tiles.h"

namespace b2f {
namespace cpu {

const KernelSet& B2F_KERNELS_FN() {
  using K = B2F_ISA_NS::KernelsOf<B2F_ISA_NS::VecAvx512, 14, 32>;
  static const KernelSet k{B2F_KERNELS_NAME, K::NR, B2F_ISA_NS::run_conv<K>, B2F_ISA_NS::run_stem<K>,
                                 B2F_ISA_NS::run_dgelu_mul<K::Vec>};
  return k;
}

}  // namespace cpu
}  // namespace b2f

// AVX-512 BF16 kernels (CPUs reporting avx512_bf16: Cooper Lake, Sapphire Rapids, Zen 4/5):
// the AVX-512F kernels of kernels_avx512.cpp, compiled with -mavx512bf16 so that bf16
// convolutions multiply channel pairs with vdpbf16ps (fp32 accumulation) instead of
// widening them. fp32 convolutions are the AVX-512F ones. Chosen at run time.
#define B2F_ISA_NS avx512bf16
#define B2F_KERNELS_FN kernels_avx512bf16
#define B2F_KERNELS_NAME "avx512bf16"
#define B2F_USE_DPBF16 1
#if !defined(__AVX512BF16__)
#error "compile this unit with -mavx512bf16"
#endif
#include "kernels_avx512.cpp"

// The CPU kernel interface. Each instruction set provides a KernelSet from its own
// translation unit (compiled with its own flags); select_kernels() picks one at run time.
//
// Coordinates: every pointer is "position-origin": row q of a tensor is at ptr + q * stride,
// with q in the tensor's own position coordinates (q may be negative inside a halo).
// A kernel computes output positions [p0, p1) (before pooling) and may therefore be run on
// any sub-range of a layer: tiles of a long sequence, or the receptive-field cone of a
// mutation. Input rows [p0 - halo, p1 + halo) must be readable, and rows outside the
// sequence must hold zeros (the "same" padding of an activated input: gelu(0) = 0).
#pragma once
#include <cstdint>

#include "basenji2_fast/numerics.h"
#include "basenji2_fast/stem.h"

namespace b2f {
namespace cpu {

using b2f::kCodeOutside;  // the stem's codes (stem.h)
using b2f::kStemCodes;

struct Epilogue {
  const float* bias = nullptr;  // [panels * nr], zero-padded
  const float* res = nullptr;   // residual row q (pre-pool) at res + q * res_stride, or null
  int64_t res_stride = 0;
  int pool = 1;                 // 1 or 2 (max-pool, stride = size)
  float* out = nullptr;         // pooled row j at out + j * out_stride, or null
  int64_t out_stride = 0;
  OutAct out_act = OutAct::None;
  float* act = nullptr;         // gelu(pooled), row j at act + j * act_stride, or null
  int64_t act_stride = 0;
  Gelu gelu = Gelu::Sigmoid;
};

struct ConvArgs {
  const float* in = nullptr;  // activated input
  int64_t in_stride = 0;
  const float* w = nullptr;   // packed [panels][k][cin][nr] (pack_conv_weights)
  int k = 1, dil = 1, cin = 0, cout = 0;
  int64_t p0 = 0, p1 = 0;
  Epilogue epi;
  int threads = 1;
};

// The one-hot stem as a gather: out[q] = bias + sum_t table[t][code[q + (t - k/2) dil]].
struct StemArgs {
  const uint8_t* codes = nullptr;  // code q at codes[q]; positions outside hold kCodeOutside
  const float* table = nullptr;    // [k][kStemCodes][panels * nr]
  int k = 1, dil = 1, cout = 0;
  int64_t p0 = 0, p1 = 0;
  Epilogue epi;
  int threads = 1;
};

struct KernelSet {
  const char* name;
  int nr;  // output-channel panel width the packed weights must use
  void (*conv)(const ConvArgs&);
  void (*stem)(const StemArgs&);
};

const KernelSet& kernels_generic();
#if defined(B2F_HAVE_X86_KERNELS)
const KernelSet& kernels_avx2();
const KernelSet& kernels_avx512();
#endif

// Chooses by CPU features; BASENJI2_FAST_ISA=avx512|avx2|generic forces one (error if unusable).
const KernelSet& select_kernels(const char* forced = nullptr);
// Names of the kernel sets this build contains and this CPU can run.
const char* compiled_isas();

}  // namespace cpu
}  // namespace b2f

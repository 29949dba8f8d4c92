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
#include <cstring>

#include "basenji2_fast/numerics.h"
#include "basenji2_fast/stem.h"
#include "basenji2_fast/winograd.h"

namespace b2f {
namespace cpu {

using b2f::kCodeOutside;  // the stem's codes (stem.h)
using b2f::kStemCodes;

using b2f::bf16_to_f32;  // bf16.h
using b2f::f32_to_bf16;

// Packed bf16 conv weights pair two input channels per output column, the layout
// vdpbf16ps multiplies: [panels][k][(cin + 1) / 2][nr][2], an odd cin's last pair padded
// with a zero channel. The other ISAs widen the same pairs by shifting (low channel) and
// masking (high channel), so every kernel set reads one layout.
inline int64_t bf16_weight_index(int nr, int k, int cin, int panel, int t, int c, int j) {
  const int64_t pairs = (cin + 1) / 2;
  return (((int64_t(panel) * k + t) * pairs + c / 2) * nr + j) * 2 + (c & 1);
}

struct Epilogue {
  const float* bias = nullptr;  // [panels * nr], zero-padded
  const float* res = nullptr;   // residual row q (pre-pool) at res + q * res_stride, or null
  int64_t res_stride = 0;
  int pool = 1;                 // 1 or 2 (max-pool, stride = size)
  float* out = nullptr;         // pooled row j at out + j * out_stride, or null
  int64_t out_stride = 0;
  OutAct out_act = OutAct::None;
  void* act = nullptr;          // gelu(pooled), row j at act + j * act_stride, or null
  int64_t act_stride = 0;
  bool act_bf16 = false;        // act rows are bf16 (rounded to nearest even), else fp32
  Gelu gelu = Gelu::Sigmoid;
  // With pool 2, which row of each pair the max took (for the gradient's routing), or null:
  // one bit per pooled element, set where the odd row is strictly greater (a tie keeps the
  // even row, as torch's max_pool1d does); pooled row j's channel c is bit c % 8 of byte
  // choice[j * choice_stride + c / 8]. Bytes of a row's columns that do not exist are left.
  uint8_t* choice = nullptr;
  int64_t choice_stride = 0;
  // out rows hold gelu'(pooled) instead of the pooled value: the backward pass's recording of
  // a tensor it reads only for GELU' (computed beside act's GELU from the same exp).
  bool out_dgelu = false;
  // The backward pass's data-gradient convs (pool 1, out only): row j times gelu'(dgelu row j)
  // where dgelu is set (the forward's pre-activation, position-origin; with dgelu_ready the
  // rows hold gelu' already, written by out_dgelu), then, where unpool is
  // set, routed through the forward's max-pool: row j goes to out rows 2j and 2j + 1, the row
  // whose bit in unpool (choice's layout) says the max took it gets the value, the other 0.
  const float* dgelu = nullptr;
  int64_t dgelu_stride = 0;
  bool dgelu_ready = false;
  const uint8_t* unpool = nullptr;
  int64_t unpool_stride = 0;
};

// A fast convolution's Winograd F(m, k) tiles (winograd.h); m == 0: direct convolution.
struct FastConv {
  int m = 0, n = 0;           // outputs and transform points per tile, n = m + k - 1
  const float* at = nullptr;  // output transform [m][n]
  const float* bt = nullptr;  // input transform [n][n]
};

struct ConvArgs {
  const void* in = nullptr;  // activated input, fp32 or (bf16) bf16 rows
  int64_t in_stride = 0;     // in elements
  // fp32: packed [panels][k][cin][nr] floats. bf16: bf16 pairs (bf16_weight_index), the
  // input bf16 too; products accumulate in fp32 and the epilogue runs in fp32.
  // Fast (fast.m > 0): the transformed weights U packed the same way as a conv of n taps,
  // one tap per transform point; bf16 then rounds the transformed inputs V to bf16, and the
  // input itself is fp32 (one rounding, of V, instead of two) unless in_bf16.
  const void* w = nullptr;
  bool bf16 = false;
  bool in_bf16 = false;  // a fast conv's input rows are bf16 (a direct bf16 conv's always are)
  int k = 1, dil = 1, cin = 0, cout = 0;
  // Outputs [p0, p1). A fast conv computes the whole tile blocks of m * dil positions that
  // cover them (storing only [p0, p1)), so it reads input rows [floor(p0) - halo,
  // ceil(p1) + halo) with p0, p1 rounded out to blocks (conv_reads in winograd.h).
  int64_t p0 = 0, p1 = 0;
  FastConv fast;
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
  // g[j] = gelu'(x[j]) d[j] for j < n, or g[j] += it (add): the backward pass's GELU' of the
  // tensors it holds raw, in the epilogues' vector math.
  void (*dgelu_mul)(const float* x, const float* d, float* g, int64_t n, Gelu v, bool add);
};

const KernelSet& kernels_generic();
#if defined(B2F_HAVE_X86_KERNELS)
const KernelSet& kernels_avx2();
const KernelSet& kernels_avx512();
const KernelSet& kernels_avx512bf16();
#endif

// Chooses by CPU features; BASENJI2_FAST_ISA=avx512bf16|avx512|avx2|generic forces one
// (error if this build or CPU cannot run it).
const KernelSet& select_kernels(const char* forced = nullptr);
// Names of the kernel sets this build contains and this CPU can run.
const char* compiled_isas();

}  // namespace cpu
}  // namespace b2f

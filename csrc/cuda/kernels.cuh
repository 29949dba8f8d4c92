// CUDA kernels: the stem gather, the implicit-GEMM dilated convolution on bf16 tensor cores
// (WMMA 16x16x16, fp32 accumulation) with its fused epilogue, and a rounding helper.
// The scalar maths (GELU variants, softplus) is numerics.h's, shared with the CPU kernels.
#pragma once
#if defined(B2F_CUDA_EMULATOR)
#include "cuda/emulator.h"  // the same source on the CPU, for tests without a GPU
#define B2F_LAUNCH(kernel, grid, block, stream, ...) ::b2f::emu::launch_kernel(grid, block, stream, &kernel, __VA_ARGS__)
#define B2F_CHECK_ALIGNED(p, n) ::b2f::emu::check_aligned(p, n, #p)
#else
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <mma.h>
#define B2F_LAUNCH(kernel, grid, block, stream, ...) kernel<<<grid, block, 0, stream>>>(__VA_ARGS__)
#define B2F_CHECK_ALIGNED(p, n) ((void)0)  // the emulator checks what the hardware requires
#endif

#include <cstdint>

#include "basenji2_fast/numerics.h"
#include "basenji2_fast/stem.h"

namespace b2f {
namespace cuda {

using bf16 = __nv_bfloat16;

// What an epilogue output applies before storing.
enum class Act : int { None = 0, Gelu = 1, Softplus = 2 };

// One destination of an epilogue: element (sequence b, row j, channel n) at
// ptr[b * seq + j * row + n]; ptr points at row 0 (after any halo rows).
struct Out {
  void* ptr = nullptr;
  int64_t seq = 0, row = 0;
  int cols = 0;  // channels n < cols are stored (the padded width, or a head's real tracks)
  bool is_bf16 = false;  // else fp32
  Act act = Act::None;
};

constexpr int kMaxOuts = 4;

// y = acc + bias [+ residual]; max-pool pairs; then each output stores act(y).
// The same order of operations as the CPU epilogue (csrc/cpu/tiles.h).
struct Epilogue {
  const float* bias = nullptr;  // [cout_p]
  const float* res = nullptr;   // fp32 residual, pre-pool row p of sequence b at res + b * res_seq + p * res_row
  int64_t res_seq = 0, res_row = 0;
  int pool = 1;  // 1 or 2
  Gelu gelu = Gelu::Sigmoid;
  int n_outs = 0;
  Out outs[kMaxOuts];
};

__device__ __forceinline__ void store_outputs(const Epilogue& e, int64_t b, int64_t j, int n, float y) {
#pragma unroll
  for (int o = 0; o < kMaxOuts; ++o) {
    if (o >= e.n_outs) break;
    const Out& out = e.outs[o];
    if (n >= out.cols) continue;
    float v = y;
    if (out.act == Act::Gelu) v = gelu(y, e.gelu);
    else if (out.act == Act::Softplus) v = softplus(y);
    const int64_t idx = b * out.seq + j * out.row + n;
    if (out.is_bf16) static_cast<bf16*>(out.ptr)[idx] = __float2bfloat16_rn(v);
    else static_cast<float*>(out.ptr)[idx] = v;
  }
}

// ---------------------------------------------------------------------------------------------
// Convolution as an implicit GEMM: M = output positions, N = output channels,
// K = taps x input channels. Row p of the A operand for tap t is the input row
// p + (t - k/2) * dil: the dilation lives in the address, no im2col buffer exists. The input's
// halo rows are zeros, so positions near the sequence ends read the "same" padding directly.
//
// Block tile kBM x kBN, 4 warps stacked along M, each warp 32 positions x 64 channels =
// 2 x 4 WMMA accumulators. One K step = one tap x 16 input channels: the block copies an
// A tile [kBM][16] and a B tile [16][kBN] into shared memory (16-byte vector loads), and the
// loads of step s + 1 are issued into registers before the MMAs of step s (latency hiding
// without asynchronous copies).
constexpr int kBM = 128, kBN = 64, kBK = 16;
constexpr int kConvThreads = 128;
// Shared-memory leading dimensions, padded by 8 bf16 / 4 floats against bank conflicts; WMMA
// needs multiples of 8 (16-bit types) / 4 (float) and 32-byte aligned fragment pointers,
// which every fragment offset below keeps (rows of 48, 144 and 272 bytes x multiples of 16).
constexpr int kLdA = kBK + 8, kLdB = kBN + 8, kLdC = kBN + 4;

struct ConvParams {
  const bf16* in = nullptr;  // row 0 of sequence 0; halo rows before and after each sequence
  int64_t in_seq = 0;        // elements between sequences
  int cin_p = 0;             // input channels, a multiple of 16 (also the row stride)
  const bf16* w = nullptr;   // [k][cin_p][cout_p]
  int cout_p = 0;            // a multiple of 16
  int k = 1, dil = 1;
  int64_t rows = 0;          // output positions per sequence, before pooling
  Epilogue epi;
};

union __align__(128) ConvSmem {
  struct {
    bf16 a[kBM][kLdA];  // 6,144 bytes: b stays 32-byte aligned
    bf16 b[kBK][kLdB];
  } ab;
  float c[kBM][kLdC];  // the accumulators, for the element-wise epilogue (34,816 bytes)
};

// grid: (ceil(rows / kBM), ceil(cout_p / kBN), batch); block: kConvThreads.
__global__ void __launch_bounds__(kConvThreads) conv_kernel(const ConvParams a) {
  using namespace nvcuda;
  __shared__ ConvSmem sm;
  const int tid = threadIdx.x, warp = tid / 32;
  const int64_t m0 = int64_t(blockIdx.x) * kBM;
  const int n0 = blockIdx.y * kBN;
  const int64_t b = blockIdx.z;
  const bf16* in = a.in + b * a.in_seq;
  const int csteps = a.cin_p / kBK;
  const int steps = a.k * csteps;
  const int half = a.k / 2;
  // Column fragments of this block inside cout_p (the rest would multiply zero padding).
  const int nfrag = min(4, (a.cout_p - n0) / 16);

  // Copy assignment. A tile: kBM rows x 2 chunks of 8 bf16 = 256 chunks, 2 per thread
  // (chunk q: row q / 2, half q % 2). B tile: 16 rows x 8 chunks = 128 chunks, 1 per thread.
  uint4 ra[2], rb;
  const auto load = [&](int step) {
    const int t = step / csteps, c0 = (step % csteps) * kBK;
    const int64_t shift = int64_t(t - half) * a.dil;
#pragma unroll
    for (int s = 0; s < 2; ++s) {
      const int q = tid + kConvThreads * s, row = q >> 1, part = q & 1;
      const int64_t p = m0 + row;
      ra[s] = make_uint4(0, 0, 0, 0);
      if (p < a.rows) {
        const bf16* src = in + (p + shift) * a.cin_p + c0 + part * 8;
        B2F_CHECK_ALIGNED(src, 16);
        ra[s] = *reinterpret_cast<const uint4*>(src);
      }
    }
    const int row = tid >> 3, n = n0 + (tid & 7) * 8;
    rb = make_uint4(0, 0, 0, 0);
    if (n < a.cout_p) {
      const bf16* src = a.w + (int64_t(t) * a.cin_p + c0 + row) * a.cout_p + n;
      B2F_CHECK_ALIGNED(src, 16);
      rb = *reinterpret_cast<const uint4*>(src);
    }
  };
  const auto stash = [&]() {
#pragma unroll
    for (int s = 0; s < 2; ++s) {
      const int q = tid + kConvThreads * s;
      *reinterpret_cast<uint4*>(&sm.ab.a[q >> 1][(q & 1) * 8]) = ra[s];
    }
    *reinterpret_cast<uint4*>(&sm.ab.b[tid >> 3][(tid & 7) * 8]) = rb;
  };

  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[2][4];
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) wmma::fill_fragment(acc[i][j], 0.f);

  load(0);
  for (int s = 0; s < steps; ++s) {
    stash();
    __syncthreads();
    if (s + 1 < steps) load(s + 1);
    wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> fa[2];
    wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major> fb;
#pragma unroll
    for (int i = 0; i < 2; ++i) wmma::load_matrix_sync(fa[i], &sm.ab.a[warp * 32 + 16 * i][0], kLdA);
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      if (j < nfrag) {  // uniform across the block
        wmma::load_matrix_sync(fb, &sm.ab.b[0][16 * j], kLdB);
#pragma unroll
        for (int i = 0; i < 2; ++i) wmma::mma_sync(acc[i][j], fa[i], fb, acc[i][j]);
      }
    }
    __syncthreads();  // every warp is done with the tiles before the next stash (or sm.c)
  }

  // The accumulators through shared memory, so that a thread owns whole (row, channel)
  // elements (WMMA's fragment layout is unspecified) and max-pool pairs sit side by side.
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j)
      if (j < nfrag) wmma::store_matrix_sync(&sm.c[warp * 32 + 16 * i][16 * j], acc[i][j], kLdC, wmma::mem_row_major);
  __syncthreads();

  const Epilogue& e = a.epi;
  const int pool = e.pool;
  const int out_rows = kBM / pool;  // kBM and m0 are even: a tile never splits a pool pair
  // Consecutive threads take consecutive channels: coalesced residual reads and stores.
  for (int idx = tid; idx < out_rows * kBN; idx += kConvThreads) {
    const int r = idx / kBN, c = idx % kBN, n = n0 + c;
    const int64_t p = m0 + int64_t(r) * pool;
    if (n >= a.cout_p || p >= a.rows) continue;
    const float bias = e.bias[n];
    float y = sm.c[r * pool][c] + bias;
    if (e.res) y += e.res[b * e.res_seq + p * e.res_row + n];
    if (pool == 2) {
      float y2 = sm.c[r * 2 + 1][c] + bias;
      if (e.res) y2 += e.res[b * e.res_seq + (p + 1) * e.res_row + n];
      y = fmaxf(y, y2);
    }
    store_outputs(e, b, p / pool, n, y);
  }
}

// ---------------------------------------------------------------------------------------------
// The one-hot stem as a gather: y[p] = bias + sum_t table[t][code(p + (t - k/2) dil)], in fp32
// and in the CPU kernels' order (taps summed from zero, then the bias). Codes beyond the
// sequence read the table's all-zero "outside" row.
constexpr int kStemRows = 8;  // pooled output rows per block
constexpr int kStemThreads = 256;

struct StemParams {
  const uint8_t* codes = nullptr;  // [batch][len]
  int64_t len = 0;
  const float* table = nullptr;  // [k][kStemCodes][cout_p]
  int k = 1, dil = 1, cout_p = 0;
  int64_t rows_out = 0;  // len / pool
  Epilogue epi;
};

// grid: (ceil(rows_out / kStemRows), batch); block: kStemThreads.
__global__ void __launch_bounds__(kStemThreads) stem_kernel(const StemParams a) {
  const int64_t b = blockIdx.y;
  const int64_t j0 = int64_t(blockIdx.x) * kStemRows;
  const uint8_t* codes = a.codes + b * a.len;
  const int pool = a.epi.pool, half = a.k / 2;
  for (int idx = threadIdx.x; idx < kStemRows * a.cout_p; idx += kStemThreads) {
    const int r = idx / a.cout_p, n = idx % a.cout_p;
    const int64_t j = j0 + r;
    if (j >= a.rows_out) continue;
    float y = 0.f;
    for (int q = 0; q < pool; ++q) {
      const int64_t p = j * pool + q;
      float acc = 0.f;
      for (int t = 0; t < a.k; ++t) {
        const int64_t pos = p + int64_t(t - half) * a.dil;
        int code = (pos >= 0 && pos < a.len) ? codes[pos] : kCodeOutside;
        if (code > kCodeOutside) code = kCodeOutside;  // never read past the table (inputs are checked upstream)
        acc += a.table[(int64_t(t) * kStemCodes + code) * a.cout_p + n];
      }
      const float v = acc + a.epi.bias[n];
      y = q == 0 ? v : fmaxf(y, v);
    }
    store_outputs(a.epi, b, j, n, y);
  }
}

// ---------------------------------------------------------------------------------------------
// x fp32 [batch][rows][c] -> bf16 [batch][*][cp] at out + b * out_seq + r * cp (+ channel),
// optionally through the GELU first. Only for single-kernel tests and the head test entry:
// in the forward pass every conv's input is written by the previous epilogue.
// grid: (ceil(rows * c / 256), batch); block: 256.
__global__ void to_bf16_kernel(const float* x, int64_t rows, int c, bf16* out, int64_t out_seq, int cp, Gelu g,
                               bool act) {
  const int64_t b = blockIdx.y;
  const int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= rows * c) return;
  const int64_t r = idx / c;
  const int ch = int(idx % c);
  float v = x[b * rows * c + idx];
  if (act) v = gelu(v, g);
  out[b * out_seq + r * cp + ch] = __float2bfloat16_rn(v);
}

}  // namespace cuda
}  // namespace b2f

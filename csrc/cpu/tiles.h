// Portable tile loops shared by every CPU instruction set. Included by each ISA's
// translation unit, so the same source is compiled (and auto-vectorised) with that
// unit's flags; an ISA replaces only the pieces it hand-writes.
#pragma once
#include <algorithm>
#include <cstring>
#include <utility>

#include "basenji2_fast/kernels.h"
#include "basenji2_fast/parallel.h"

namespace b2f {
namespace cpu {
namespace B2F_ISA_NS {

// Tiles per block of positions. Each ISA picks its register tile MR x NR; MR is even, so
// a tile never splits a max-pool pair.
constexpr int kTilesPerBlock = 8;

// Two bf16 channels (c, c + 1) of one input row as one 32-bit lane, for the bf16 kernels'
// pair broadcasts.
inline uint32_t load_pair(const uint16_t* x) {
  uint32_t v;
  std::memcpy(&v, x, 4);
  return v;
}

// The same pointer, opaque to the optimiser: the high-channel pass broadcasts each input
// pair again from memory (a load, free) instead of the compiler keeping every row's
// broadcast from the low-channel pass in registers, which spills the accumulators.
inline const uint16_t* reload(const uint16_t* x) {
  asm("" : "+r"(x));
  return x;
}

// Scalar epilogue over a tile [rows][NR] of accumulators for positions p.., panel columns.
template <int NR>
inline void epilogue_scalar(const Epilogue& e, float* tile, int rows, int64_t p, int col0, int ncols) {
  for (int i = 0; i < rows; ++i) {
    float* t = tile + i * NR;
    for (int j = 0; j < ncols; ++j) t[j] += e.bias[col0 + j];
    if (e.res) {
      const float* r = e.res + (p + i) * e.res_stride + col0;
      for (int j = 0; j < ncols; ++j) t[j] += r[j];
    }
  }
  int out_rows = rows;
  if (e.pool == 2) {
    out_rows = rows / 2;
    for (int i = 0; i < out_rows; ++i)
      for (int j = 0; j < ncols; ++j) tile[i * NR + j] = std::max(tile[2 * i * NR + j], tile[(2 * i + 1) * NR + j]);
  }
  const int64_t j0 = p / e.pool;
  for (int i = 0; i < out_rows; ++i) {
    const float* t = tile + i * NR;
    if (e.out) {
      float* o = e.out + (j0 + i) * e.out_stride + col0;
      if (e.out_act == OutAct::Softplus)
        for (int j = 0; j < ncols; ++j) o[j] = softplus(t[j]);
      else
        std::memcpy(o, t, sizeof(float) * ncols);
    }
    if (e.act && e.act_bf16) {
      uint16_t* o = static_cast<uint16_t*>(e.act) + (j0 + i) * e.act_stride + col0;
      for (int j = 0; j < ncols; ++j) o[j] = f32_to_bf16(gelu(t[j], e.gelu));
    } else if (e.act) {
      float* o = static_cast<float*>(e.act) + (j0 + i) * e.act_stride + col0;
      for (int j = 0; j < ncols; ++j) o[j] = gelu(t[j], e.gelu);
    }
  }
}

// Runs tile_fn(p, rows, panel) over [p0, p1) x panels, threads over tasks (parallel_for:
// static chunks of consecutive tasks, one per thread).
// chunk == 0: a task is one panel over a block of positions, consecutive blocks of a panel
//   on one thread, so the panel's weights stay in cache while positions stream past
//   (weight-heavy layers).
// chunk > 0: a task is `chunk` positions over every panel, so those input rows stay in L2
//   while the weight panels stream past (input-heavy layers: the first tower layers read
//   tens of MB of input and a few MB of weights).
template <int MR, int NR, typename TileFn>
inline void for_each_tile(int64_t p0, int64_t p1, int cout, int threads, int64_t chunk, TileFn&& tile_fn) {
  const int panels = (cout + NR - 1) / NR;
  if (chunk > 0) {
    const int64_t ntasks = (p1 - p0 + chunk - 1) / chunk;
    parallel_for(ntasks, threads, [&](int64_t t0, int64_t t1) {
      for (int64_t task = t0; task < t1; ++task) {
        const int64_t b0 = p0 + task * chunk, b1 = std::min(b0 + chunk, p1);
        for (int panel = 0; panel < panels; ++panel)
          for (int64_t p = b0; p < b1; p += MR) tile_fn(p, int(std::min<int64_t>(MR, b1 - p)), panel);
      }
    });
    return;
  }
  const int64_t block = int64_t(MR) * kTilesPerBlock;
  const int64_t nblocks = (p1 - p0 + block - 1) / block;
  const int64_t ntasks = nblocks * panels;
  parallel_for(ntasks, threads, [&](int64_t t0, int64_t t1) {
    for (int64_t task = t0; task < t1; ++task) {
      const int panel = int(task / nblocks);
      const int64_t b0 = p0 + (task % nblocks) * block;
      const int64_t b1 = std::min(b0 + block, p1);
      for (int64_t p = b0; p < b1; p += MR) tile_fn(p, int(std::min<int64_t>(MR, b1 - p)), panel);
    }
  });
}

// The loop order for a conv (see for_each_tile): chunk-major when the layer's input
// outweighs its weights, with chunks whose input rows fill about half an L2.
template <int MR>
inline int64_t conv_chunk(const ConvArgs& a) {
  const int64_t es = a.bf16 ? 2 : 4;  // bytes per input element and weight
  const int64_t in_bytes = (a.p1 - a.p0) * int64_t(a.cin) * es;
  const int64_t w_bytes = int64_t(a.k) * a.cin * a.cout * es;
  if (in_bytes <= w_bytes) return 0;
  const int64_t rows = (192 * 1024) / (es * int64_t(a.cin));
  return std::max<int64_t>(4 * MR, rows / MR * MR);
}

// Calls f(std::integral_constant<int, rows>) for rows in 1..MR: full tiles use the widest
// register block, a range's tail an exact-size one.
template <int MR, typename F, int... Rs>
inline void dispatch_rows(int rows, F&& f, std::integer_sequence<int, Rs...>) {
  ((rows == Rs + 1 ? f(std::integral_constant<int, Rs + 1>{}) : void()), ...);
}

// The conv driver every ISA shares. tile_at(rows_constant, p, panel, tile) fills a tile
// [rows][NR] of accumulators with the ISA's micro-kernel; epilogue finishes and stores it.
template <int MR, int NR, typename TileAt, typename Epi>
inline void conv_tiles(const ConvArgs& a, TileAt&& tile_at, Epi&& epilogue) {
  for_each_tile<MR, NR>(a.p0, a.p1, a.cout, a.threads, conv_chunk<MR>(a), [&](int64_t p, int rows, int panel) {
    alignas(64) float tile[MR * NR];
    dispatch_rows<MR>(rows, [&](auto r) { tile_at(r, p, panel, tile); }, std::make_integer_sequence<int, MR>{});
    const int col0 = panel * NR;
    epilogue(a.epi, tile, rows, p, col0, std::min(NR, a.cout - col0));
  });
}

// The one-hot stem: per position, the sum of one table row per tap (no multiplies).
// sum_rows(rows, k, out) adds k rows of NR floats into out[NR] with the ISA's vectors
// (compilers do not vectorise the portable loop well across the gathered rows).
template <int MR, int NR, typename SumRows, typename Epi>
inline void stem_tiles(const StemArgs& a, SumRows&& sum_rows, Epi&& epilogue) {
  const int64_t padded = ((a.cout + NR - 1) / NR) * NR;
  const int half = a.k / 2;
  for_each_tile<MR, NR>(a.p0, a.p1, a.cout, a.threads, 0, [&](int64_t p, int rows, int panel) {
    alignas(64) float tile[MR * NR];
    const float* taps[64];  // kernel sizes up to 64 taps
    const int col0 = panel * NR;
    for (int i = 0; i < rows; ++i) {
      const uint8_t* codes = a.codes + p + i - int64_t(half) * a.dil;
      for (int t = 0; t < a.k; ++t)
        taps[t] = a.table + (int64_t(t) * kStemCodes + codes[int64_t(t) * a.dil]) * padded + col0;
      sum_rows(taps, a.k, tile + i * NR);
    }
    epilogue(a.epi, tile, rows, p, col0, std::min(NR, a.cout - col0));
  });
}

}  // namespace B2F_ISA_NS
}  // namespace cpu
}  // namespace b2f

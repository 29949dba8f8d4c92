// The CPU kernels, written once: every instruction set's translation unit includes this
// file with its own compiler flags and namespace (B2F_ISA_NS) and instantiates the drivers
// run_conv / run_stem with a bundle K = KernelsOf<V, MR, NR> of
//   V                 its vector traits (vec.h)
//   MR x NR           its register tile: MR rows (positions, or Winograd tiles) x NR output
//                     columns (a panel; NR a multiple of V::lanes, MR even so that a tile
//                     never splits a max-pool pair)
// from which the micro-kernels, the epilogue and the stem's row sums below are made.
#pragma once
#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <type_traits>
#include <utility>

#include "basenji2_fast/kernels.h"
#include "basenji2_fast/parallel.h"
#include "vec.h"
#include "vmath.h"

namespace b2f {
namespace cpu {
namespace B2F_ISA_NS {

// Register tiles per block of positions (panel-major direct convolution, for_each_tile).
constexpr int kTilesPerBlock = 8;

// The same pointer, opaque to the optimiser: the high-channel pass broadcasts each input
// pair again from memory (a load, free) instead of the compiler keeping every row's
// broadcast from the low-channel pass in registers, which spills the accumulators.
inline const uint16_t* reload(const uint16_t* x) {
  asm("" : "+r"(x));
  return x;
}

// fp32 from an fp32 or bf16 (uint16_t) element, and back (bf16: rounded to nearest even).
inline float to_f32(float x) { return x; }
inline float to_f32(uint16_t x) { return bf16_to_f32(x); }
template <typename T>
inline T from_f32(float x) {
  if constexpr (std::is_same<T, float>::value) return x;
  else return f32_to_bf16(x);
}

// Bits [c, c + n) of a row of max-pool choices (Epilogue::choice), column c at bit 0; n <= 25.
inline uint32_t choice_bits(const uint8_t* row, int c, int n) {
  uint32_t b = 0;
  for (int k = c / 8; k <= (c + n - 1) / 8; ++k) b |= uint32_t(row[k]) << (8 * (k - c / 8));
  return b >> (c % 8);
}

// The epilogue's switches, read from the Epilogue at run time (EpiFlags) or constants
// (EpiConst, the common cases over whole panels): with constants the compiler drops every
// branch and inlines the vector math, so that a row's GELUs overlap instead of each waiting on
// an out-of-line exp (Basenji2 on a Zen 3, in-process A/B of 20 alternating calls: the
// forward pass 3-5% faster, a gradient 2-3%). The same body either way: the same bits.
struct EpiFlags {
  bool pool2, res, out, act, rec, dg, dgelu, unpool, dgelu_ready, act_bf16, whole;
  OutAct out_act;
  EpiFlags(const Epilogue& e, bool whole_panel)
      : pool2(e.pool == 2), res(e.res), out(e.out), act(e.act), rec(e.pool == 2 && e.choice), dg(e.out_dgelu),
        dgelu(e.dgelu), unpool(e.unpool), dgelu_ready(e.dgelu_ready), act_bf16(e.act_bf16), whole(whole_panel),
        out_act(e.out_act) {}
};
template <bool POOL2, bool RES, bool OUT, bool ACT, bool REC = false, bool DG = false, bool DGELU = false,
          bool UNPOOL = false, bool ACT_BF16 = false>
struct EpiConst {
  static constexpr bool pool2 = POOL2, res = RES, out = OUT, act = ACT, rec = REC, dg = DG, dgelu = DGELU,
                        unpool = UNPOOL, dgelu_ready = true, act_bf16 = ACT_BF16, whole = true;
  static constexpr OutAct out_act = OutAct::None;
};

// The epilogue of a register tile [rows][NR] of accumulators (row stride NR) for positions
// p.. and panel columns [col0, col0 + ncols), the switches f: bias, residual, max-pool (and its
// choices), then the raw output (softplus for heads; GELU' with dg) and / or the GELU-activated
// one (fp32 or bf16); in the backward pass, GELU' and the max-pool's routing instead
// (Epilogue::dgelu, unpool). Each row's vectors first to their pooled values, then stored.
template <class V, int NR, class F>
inline void epilogue_rows(const Epilogue& e, const F& f, const float* tile, int rows, int64_t p, int col0,
                          int ncols) {
  using R = typename V::reg;
  constexpr int L = V::lanes, C = NR / L;
  const int step = f.pool2 ? 2 : 1;
  const int nv = f.whole ? C : std::min(C, (ncols + L - 1) / L);  // vectors with columns that exist
  const auto cols = [&](int h) { return f.whole ? L : std::min(L, ncols - h * L); };
  const auto load = [&](const float* q, int h) { return cols(h) == L ? V::load(q) : V::load_n(q, cols(h)); };
  const auto store = [&](float* q, R v, int h) {
    if (cols(h) == L) V::store(q, v);
    else V::store_n(q, v, cols(h));
  };
  R b[C];
  for (int h = 0; h < nv; ++h) b[h] = V::load(e.bias + col0 + h * L);  // zero-padded to whole panels
  const auto row = [&](int i, int h) {
    const R v = V::add(V::load(tile + i * NR + h * L), b[h]);
    return f.res ? V::add(v, load(e.res + (p + i) * e.res_stride + col0 + h * L, h)) : v;
  };
  for (int i = 0; i < rows; i += step) {
    const int64_t j = (p + i) / step;
    uint64_t odd = 0;  // the panel's pool choices (rec)
    R v[C];
    for (int h = 0; h < nv; ++h) {
      if (f.pool2) {
        const R v0 = row(i, h), v1 = row(i + 1, h);
        if (f.rec) odd |= uint64_t(V::bits(V::gt(v1, v0))) << (h * L);
        v[h] = V::max(v0, v1);
      } else {
        v[h] = row(i, h);
      }
      if (f.dgelu) {
        const R x = load(e.dgelu + j * e.dgelu_stride + col0 + h * L, h);
        v[h] = V::mul(v[h], f.dgelu_ready ? x : vgelu_grad<V>(x, e.gelu));
      }
    }
    for (int h = 0; h < nv; ++h) {
      const int c = col0 + h * L;
      if (f.unpool) {
        const typename V::mask odd_rows = V::from_bits(choice_bits(e.unpool + j * e.unpool_stride, c, cols(h)));
        float* even_row = e.out + 2 * j * e.out_stride + c;
        store(even_row, V::select(odd_rows, V::zero(), v[h]), h);
        store(even_row + e.out_stride, V::select(odd_rows, v[h], V::zero()), h);
        continue;
      }
      R dg = v[h];  // GELU'(v) with dg; g: GELU(v) for act
      // fp32 rows inline the sigmoid GELU (the stem 26 -> 19 ms per pass on Zen 4); rows stored
      // as bf16 keep the call, which measured faster there (the stem 2-3 ms in 8 of 8 pairs).
      const R g = f.dg    ? vgelu_and_grad<V>(v[h], e.gelu, dg)
                  : !f.act ? v[h]
                  : f.act_bf16 ? vgelu<V>(v[h], e.gelu)
                               : vgelu_fused<V>(v[h], e.gelu);
      if (f.out) {
        const R o = f.dg                               ? dg
                    : f.out_act == OutAct::Softplus ? vsoftplus<V>(v[h])
                    : f.out_act == OutAct::Sigmoid  ? vsigmoid<V>(v[h])
                                                    : v[h];
        store(e.out + j * e.out_stride + c, o, h);
      }
      if (f.act) {
        if (f.act_bf16) V::store_bf16(static_cast<uint16_t*>(e.act) + j * e.act_stride + c, g, cols(h));
        else store(static_cast<float*>(e.act) + j * e.act_stride + c, g, h);
      }
    }
    if (f.rec) {  // the bytes of the columns that exist; bits beyond them cleared
      if (ncols < 64) odd &= (uint64_t(1) << ncols) - 1;
      uint8_t* dst = e.choice + j * e.choice_stride + col0 / 8;
      for (int k = 0; k < (std::min(ncols, NR) + 7) / 8; ++k) dst[k] = uint8_t(odd >> (8 * k));
    }
  }
}

// epilogue_rows with constant switches for whole panels of the common cases: the forward's fp32
// GELU rows (bias, residual, max-pool, raw rows), the recording's pool choices and GELU', and
// the data gradients' kept GELU' and unpooling; run-time switches for the rest.
template <class V, int NR>
inline void epilogue(const Epilogue& e, const float* tile, int rows, int64_t p, int col0, int ncols) {
  static_assert(NR % 8 == 0 && NR <= 64, "a panel's pool choices are whole bytes of one word");
  const auto run = [&](auto f) { epilogue_rows<V, NR>(e, f, tile, rows, p, col0, ncols); };
  const EpiFlags f(e, ncols == NR);
  if (f.whole && f.out_act == OutAct::None && (!f.dgelu || f.dgelu_ready)) {
    if (!f.pool2 && f.out && !f.act && !f.res && !f.dg && !f.rec) {  // data gradients
      if (f.dgelu) return f.unpool ? run(EpiConst<false, false, true, false, false, false, true, true>{})
                                   : run(EpiConst<false, false, true, false, false, false, true, false>{});
      return f.unpool ? run(EpiConst<false, false, true, false, false, false, false, true>{})
                      : run(EpiConst<false, false, true, false>{});
    }
    if (f.act && !f.dgelu && !f.unpool) {
      if (f.rec && f.out && !f.res && !f.act_bf16)  // the recording forward's pooled layers
        return f.dg ? run(EpiConst<true, false, true, true, true, true>{})
                    : run(EpiConst<true, false, true, true, true, false>{});
      if (!f.rec && !f.dg) {
        // The forward's GELU rows, stored fp32 or (precision bf16) bf16.
        const auto fwd = [&](auto bf) {
          constexpr bool B = decltype(bf)::value;
          switch (f.pool2 * 4 + f.res * 2 + f.out) {
            case 0: return run(EpiConst<false, false, false, true, false, false, false, false, B>{});
            case 1: return run(EpiConst<false, false, true, true, false, false, false, false, B>{});
            case 2: return run(EpiConst<false, true, false, true, false, false, false, false, B>{});
            case 3: return run(EpiConst<false, true, true, true, false, false, false, false, B>{});
            case 4: return run(EpiConst<true, false, false, true, false, false, false, false, B>{});
            case 5: return run(EpiConst<true, false, true, true, false, false, false, false, B>{});
            case 6: return run(EpiConst<true, true, false, true, false, false, false, false, B>{});
            default: return run(EpiConst<true, true, true, true, false, false, false, false, B>{});
          }
        };
        return f.act_bf16 ? fwd(std::true_type{}) : fwd(std::false_type{});
      }
    }
  }
  run(f);
}

// fp32 micro-kernel: out[i][0..NR) (row stride ldt) = sum_{t < taps} sum_{c < cin}
// x[i xs + t ts + c] w[t][c][0..NR) for rows i < R, summed in fp32 in the order of (t, c):
// R x NR / lanes accumulators in registers, NR / lanes weight vectors, one broadcast.
template <class V, int NR, int R>
inline void micro(const float* x, int64_t xs, int64_t ts, const float* w, int taps, int cin, float* out, int64_t ldt) {
  constexpr int L = V::lanes, C = NR / L;
  typename V::reg acc[R][C];
#pragma GCC unroll 16
  for (int i = 0; i < R; ++i)
#pragma GCC unroll 8
    for (int h = 0; h < C; ++h) acc[i][h] = V::zero();
  for (int t = 0; t < taps; ++t) {
    const float* xt = x + t * ts;
    const float* wt = w + int64_t(t) * cin * NR;
    for (int c = 0; c < cin; ++c, wt += NR, ++xt) {
      typename V::reg wv[C];
#pragma GCC unroll 8
      for (int h = 0; h < C; ++h) wv[h] = V::load(wt + h * L);
#pragma GCC unroll 16
      for (int i = 0; i < R; ++i) {
        const typename V::reg xi = V::broadcast(xt + i * xs);
#pragma GCC unroll 8
        for (int h = 0; h < C; ++h) acc[i][h] = V::fmadd(xi, wv[h], acc[i][h]);
      }
    }
  }
#pragma GCC unroll 16
  for (int i = 0; i < R; ++i)
#pragma GCC unroll 8
    for (int h = 0; h < C; ++h) V::store(out + i * ldt + h * L, acc[i][h]);
}

// bf16 micro-kernel: x bf16 rows, w bf16 channel pairs [taps][(cin + 1) / 2][NR][2]
// (bf16_weight_index), fp32 sums. A 32-bit lane holds channels (c, c + 1) of one column.
// Where V has a bf16 dot product (vdpbf16ps) each pair is one instruction; elsewhere pairs are
// widened in registers (channel c shifted into the high half, channel c + 1 with the low half
// masked off) and channel c's multiply-adds run before channel c + 1's, the fp32 kernel's
// order. Inputs are broadcast as whole pairs straight from memory; an odd cin's last pair
// reads its one channel alone (its partner weight is zero, the next element another row's).
template <class V, int NR, int R>
inline void micro(const uint16_t* x, int64_t xs, int64_t ts, const uint16_t* w, int taps, int cin, float* out,
                  int64_t ldt) {
  using F = typename V::reg;
  using P = typename V::preg;
  constexpr int L = V::lanes, C = NR / L;
  F acc[R][C];
#pragma GCC unroll 16
  for (int i = 0; i < R; ++i)
#pragma GCC unroll 8
    for (int h = 0; h < C; ++h) acc[i][h] = V::zero();
  const int pairs = (cin + 1) / 2, full_pairs = cin / 2;
  for (int t = 0; t < taps; ++t) {
    const uint16_t* xt = x + t * ts;
    const uint16_t* wt = w + int64_t(t) * pairs * NR * 2;
    for (int c2 = 0; c2 < full_pairs; ++c2, wt += NR * 2, xt += 2) {
      P wp[C];
#pragma GCC unroll 8
      for (int h = 0; h < C; ++h) wp[h] = V::load_pairs(wt + h * L * 2);
      if constexpr (V::kDotBf16) {
#pragma GCC unroll 16
        for (int i = 0; i < R; ++i) {
          const P xi = V::broadcast_pair(xt + i * xs);
#pragma GCC unroll 8
          for (int h = 0; h < C; ++h) acc[i][h] = V::dot_bf16(acc[i][h], xi, wp[h]);
        }
      } else {
        {
          F wl[C];
#pragma GCC unroll 8
          for (int h = 0; h < C; ++h) wl[h] = V::pair_lo(wp[h]);
#pragma GCC unroll 16
          for (int i = 0; i < R; ++i) {
            const F xi = V::pair_lo(V::broadcast_pair(xt + i * xs));
#pragma GCC unroll 8
            for (int h = 0; h < C; ++h) acc[i][h] = V::fmadd(xi, wl[h], acc[i][h]);
          }
        }
        F wh[C];
#pragma GCC unroll 8
        for (int h = 0; h < C; ++h) wh[h] = V::pair_hi(wp[h]);
        const uint16_t* xh = reload(xt);
#pragma GCC unroll 16
        for (int i = 0; i < R; ++i) {
          const F xi = V::pair_hi(V::broadcast_pair(xh + i * xs));
#pragma GCC unroll 8
          for (int h = 0; h < C; ++h) acc[i][h] = V::fmadd(xi, wh[h], acc[i][h]);
        }
      }
    }
    if (pairs > full_pairs) {  // odd cin: the last channel, its partner weight zero
      P wp[C];
#pragma GCC unroll 8
      for (int h = 0; h < C; ++h) wp[h] = V::load_pairs(wt + h * L * 2);
#pragma GCC unroll 16
      for (int i = 0; i < R; ++i) {
        const P xi = V::broadcast_half(xt + i * xs);
#pragma GCC unroll 8
        for (int h = 0; h < C; ++h) {
          if constexpr (V::kDotBf16) acc[i][h] = V::dot_bf16(acc[i][h], xi, wp[h]);
          else acc[i][h] = V::fmadd(V::pair_lo(xi), V::pair_lo(wp[h]), acc[i][h]);
        }
      }
    }
  }
#pragma GCC unroll 16
  for (int i = 0; i < R; ++i)
#pragma GCC unroll 8
    for (int h = 0; h < C; ++h) V::store(out + i * ldt + h * L, acc[i][h]);
}

// Asks for the cache line of p (never faults). Inline assembly on x86: for these kernels
// GCC 12 emitted no instruction for __builtin_prefetch (seen with objdump).
inline void prefetch_line(const void* p) {
#if defined(__x86_64__) || defined(__i386__)
  asm volatile("prefetcht0 %0" : : "m"(*static_cast<const char*>(p)));
#else
  __builtin_prefetch(p, 0, 3);
#endif
}

// Asks for the rows a register tile's epilogue will touch (residual rows to read, output
// rows to write) while its micro-kernel runs: rows are a layer's stride apart, so the
// hardware prefetchers do not see them coming, and a 1x1 conv's short micro-kernel cannot
// hide their cache misses.
inline void prefetch_epilogue(const Epilogue& e, int64_t p, int rows, int col0) {
  for (int i = 0; i < rows; ++i) {
    if (e.res) prefetch_line(e.res + (p + i) * e.res_stride + col0);
    if ((p + i) % e.pool) continue;
    const int64_t j = (p + i) / e.pool;
    if (e.unpool) {
      prefetch_line(e.out + 2 * j * e.out_stride + col0);
      prefetch_line(e.out + (2 * j + 1) * e.out_stride + col0);
    } else if (e.out) {
      prefetch_line(e.out + j * e.out_stride + col0);
    }
    if (e.dgelu) prefetch_line(e.dgelu + j * e.dgelu_stride + col0);
    if (e.act) prefetch_line(static_cast<const char*>(e.act) + (j * e.act_stride + col0) * (e.act_bf16 ? 2 : 4));
  }
}

// The stem's gathered rows for R positions at once: out[i][0..NR) = the sum, in tap order, of
// the k rows base + off[i * stride + t]. R positions interleaved give R * NR / lanes
// independent addition chains: one position alone is a chain of k dependent adds.
template <class V, int NR, int R>
inline void sum_rows(const float* base, const int32_t* off, int64_t stride, int k, float* out) {
  constexpr int L = V::lanes, C = NR / L;
  typename V::reg acc[R][C];
#pragma GCC unroll 16
  for (int i = 0; i < R; ++i)
#pragma GCC unroll 8
    for (int h = 0; h < C; ++h) acc[i][h] = V::zero();
  for (int t = 0; t < k; ++t)
#pragma GCC unroll 16
    for (int i = 0; i < R; ++i) {
      const float* row = base + off[i * stride + t];
#pragma GCC unroll 8
      for (int h = 0; h < C; ++h) acc[i][h] = V::add(acc[i][h], V::load(row + h * L));
    }
#pragma GCC unroll 16
  for (int i = 0; i < R; ++i)
#pragma GCC unroll 8
    for (int h = 0; h < C; ++h) V::store(out + i * NR + h * L, acc[i][h]);
}

// An instruction set's kernels: vector traits V, register tile MR x NR.
template <class V, int MR_, int NR_>
struct KernelsOf {
  using Vec = V;
  static constexpr int MR = MR_, NR = NR_;
  static_assert(NR % V::lanes == 0 && MR % 2 == 0, "NR whole vectors, MR even");
  template <int R, typename T>
  static void micro(const T* x, int64_t xs, int64_t ts, const T* w, int taps, int cin, float* out, int64_t ldt) {
    B2F_ISA_NS::micro<V, NR, R>(x, xs, ts, w, taps, cin, out, ldt);
  }
  static void epilogue(const Epilogue& e, const float* t, int r, int64_t p, int c0, int nc) {
    B2F_ISA_NS::epilogue<V, NR>(e, t, r, p, c0, nc);
  }
  template <int R>
  static void sum_rows(const float* base, const int32_t* off, int64_t stride, int k, float* out) {
    B2F_ISA_NS::sum_rows<V, NR, R>(base, off, stride, k, out);
  }
};

// Runs fn(task) for task in [0, ntasks) on up to `threads` threads, each taking the next task
// from a shared counter (in order) until none is left: every parallel loop of the kernels goes
// through here. Tasks write disjoint outputs, so which thread runs one changes no bit. Taken
// one at a time rather than in one static chunk per thread, a thread slowed by the host (two
// vCPUs are not always two cores) no longer holds every op up: Basenji2 on a 2-vCPU Zen 3 with
// a third busy thread, 24 paired forward passes, 1.45 -> 1.27 s (23 of 24 faster); on the
// quiet machine the same within the noise (-4.5 ms of 750, 17 of 30).
template <typename Fn>
inline void parallel_tasks(int64_t ntasks, int threads, Fn&& fn) {
  const int64_t team = std::min<int64_t>(std::max(threads, 1), ntasks);
  std::atomic<int64_t> next{0};
  parallel_for(team, int(team), [&](int64_t, int64_t) {
    for (int64_t task; (task = next.fetch_add(1, std::memory_order_relaxed)) < ntasks;) fn(task);
  });
}

// Runs tile_fn(p, rows, panel) over [p0, p1) x panels, threads over tasks.
// chunk == 0: a task is one panel over a block of positions; taken in order, a panel's blocks
//   are worked through together while its weights are in cache and positions stream past
//   (weight-heavy layers).
// chunk > 0: a task is `chunk` positions over every panel, so those input rows stay in L2
//   while the weight panels stream past (input-heavy layers: the first tower layers read
//   tens of MB of input and a few MB of weights).
template <int MR, int NR, typename TileFn>
inline void for_each_tile(int64_t p0, int64_t p1, int cout, int threads, int64_t chunk, TileFn&& tile_fn) {
  const int panels = (cout + NR - 1) / NR;
  if (chunk > 0) {
    const int64_t ntasks = (p1 - p0 + chunk - 1) / chunk;
    parallel_tasks(ntasks, threads, [&](int64_t task) {
      const int64_t b0 = p0 + task * chunk, b1 = std::min(b0 + chunk, p1);
      for (int panel = 0; panel < panels; ++panel)
        for (int64_t p = b0; p < b1; p += MR) tile_fn(p, int(std::min<int64_t>(MR, b1 - p)), panel);
    });
    return;
  }
  const int64_t block = int64_t(MR) * kTilesPerBlock;
  const int64_t nblocks = (p1 - p0 + block - 1) / block;
  parallel_tasks(nblocks * panels, threads, [&](int64_t task) {
    const int panel = int(task / nblocks);
    const int64_t b0 = p0 + (task % nblocks) * block;
    const int64_t b1 = std::min(b0 + block, p1);
    for (int64_t p = b0; p < b1; p += MR) tile_fn(p, int(std::min<int64_t>(MR, b1 - p)), panel);
  });
}

// The loop order for a conv (see for_each_tile): chunk-major when the layer's input
// outweighs its weights, with chunks whose input rows fill about half an L2, as many as a
// multiple of the threads (else the last round of chunks leaves threads idle: a 1x1 layer of
// 1,024 rows made 9 chunks for 2 threads).
template <int MR>
inline int64_t conv_chunk(const ConvArgs& a) {
  const int64_t es = a.bf16 ? 2 : 4;  // bytes per input element and weight
  const int64_t len = a.p1 - a.p0;
  const int64_t in_bytes = len * int64_t(a.cin) * es;
  const int64_t w_bytes = int64_t(a.k) * a.cin * a.cout * es;
  if (in_bytes <= w_bytes) return 0;
  const int64_t rows = std::max<int64_t>(4 * MR, (192 * 1024) / (es * int64_t(a.cin)) / MR * MR);
  const int64_t t = std::max(1, a.threads);
  const int64_t chunks = ((len + rows - 1) / rows + t - 1) / t * t;
  return std::max<int64_t>(4 * MR, ((len + chunks - 1) / chunks + MR - 1) / MR * MR);
}

// Calls f(std::integral_constant<int, rows>) for rows in 1..MR: full tiles use the widest
// register block, a range's tail an exact-size one.
template <int MR, typename F, int... Rs>
inline void dispatch_rows(int rows, F&& f, std::integer_sequence<int, Rs...>) {
  ((rows == Rs + 1 ? f(std::integral_constant<int, Rs + 1>{}) : void()), ...);
}
template <int MR, typename F>
inline void with_rows(int rows, F&& f) {
  dispatch_rows<MR>(rows, f, std::make_integer_sequence<int, MR>{});
}

// Elements of one tap (or transform point) of a packed weight panel: [cin][NR] floats, or
// bf16 pairs [(cin + 1) / 2][NR][2].
template <int NR>
inline int64_t tap_elems(int cin, bool bf16) {
  return bf16 ? int64_t((cin + 1) / 2) * NR * 2 : int64_t(cin) * NR;
}

// R rows of K's micro-kernel in the ConvArgs' precision: x and w are fp32, or bf16 when bf16.
template <class K, int R>
inline void micro_any(bool bf16, const void* x, int64_t xs, int64_t ts, const void* w, int taps, int cin, float* out,
                      int64_t ldt) {
  if (bf16)
    K::template micro<R>(static_cast<const uint16_t*>(x), xs, ts, static_cast<const uint16_t*>(w), taps, cin, out, ldt);
  else
    K::template micro<R>(static_cast<const float*>(x), xs, ts, static_cast<const float*>(w), taps, cin, out, ldt);
}

// Direct convolution: per register tile of MR positions x NR output channels, all k taps.
template <class K>
inline void conv_direct(const ConvArgs& a) {
  constexpr int MR = K::MR, NR = K::NR;
  const int64_t es = a.bf16 ? 2 : 4;
  const char* in = static_cast<const char*>(a.in);
  const char* w = static_cast<const char*>(a.w);
  const int64_t panel_bytes = a.k * tap_elems<NR>(a.cin, a.bf16) * es;
  for_each_tile<MR, NR>(a.p0, a.p1, a.cout, a.threads, conv_chunk<MR>(a), [&](int64_t p, int rows, int panel) {
    alignas(64) float tile[K::MR * K::NR];  // K::, not a local constexpr: GCC 12 fails on the latter
    const char* x = in + (p - int64_t(a.k / 2) * a.dil) * a.in_stride * es;
    prefetch_epilogue(a.epi, p, rows, panel * NR);
    with_rows<MR>(rows, [&](auto r) {
      micro_any<K, decltype(r)::value>(a.bf16, x, a.in_stride, int64_t(a.dil) * a.in_stride, w + panel * panel_bytes,
                                       a.k, a.cin, tile, NR);
    });
    const int col0 = panel * NR;
    K::epilogue(a.epi, tile, rows, p, col0, std::min(NR, a.cout - col0));
  });
}

// Growing 64-byte aligned scratch memory (kept per thread between calls: the sizes recur).
class Scratch {
 public:
  template <typename T>
  T* get(size_t n) {
    const size_t bytes = (n * sizeof(T) + 63) / 64 * 64;
    if (bytes > cap_) {
      buf_.reset(static_cast<char*>(std::aligned_alloc(64, bytes)));
      if (!buf_) throw std::bad_alloc();
      cap_ = bytes;
    }
    return reinterpret_cast<T*>(buf_.get());
  }

 private:
  struct Free {
    void operator()(char* p) const { std::free(p); }
  };
  std::unique_ptr<char, Free> buf_;
  size_t cap_ = 0;
};

// Bytes of transformed input (one transform point) a fast conv's task keeps for its tiles:
// with every output panel's GEMM reading them again, they should stay in L2.
constexpr int64_t kFastPointBytes = 128 * 1024;

// Full vectors of fp32 or bf16 (widened exactly / rounded to nearest even) elements.
template <class V>
inline typename V::reg vload(const float* p) {
  return V::load(p);
}
template <class V>
inline typename V::reg vload(const uint16_t* p) {
  return V::load_bf16(p);
}
template <class V>
inline void vstore(float* p, typename V::reg v) {
  V::store(p, v);
}
template <class V>
inline void vstore(uint16_t* p, typename V::reg v) {
  V::store_bf16(p, v);
}

// Input transform of `tiles` consecutive tiles from block b0 on (tile t: block b0 + t / d,
// phase t % d): v[j * point_stride + t * cin + c] = sum_s bt[j][s] x[row s of tile t][c],
// summed in fp32 in the order of s, zero coefficients skipped; In/Out: float, or uint16_t
// (bf16, widened / rounded to nearest even). Per vector of channels every point is
// accumulated in a register from the tile's rows (in L1 while the points are computed); the
// last cin % lanes channels take the same steps one by one.
template <class V, typename In, typename Out>
inline void fast_input_transform_into(const ConvArgs& a, int64_t b0, int tiles, Out* v, int64_t point_stride) {
  using R = typename V::reg;
  constexpr int L = V::lanes;
  const int n = a.fast.n, d = a.dil, cin = a.cin;
  const int64_t md = int64_t(a.fast.m) * d, h = int64_t(a.k / 2) * d;
  const In* in = static_cast<const In*>(a.in);
  // The nonzero coefficients of each point, in the order of s.
  int terms[kMaxFastPoints + 1], tap[kMaxFastPoints + 1][kMaxFastPoints + 1];
  float coef[kMaxFastPoints + 1][kMaxFastPoints + 1];
  for (int j = 0; j < n; ++j) {
    terms[j] = 0;
    for (int s = 0; s < n; ++s)
      if (a.fast.bt[j * n + s] != 0.f) tap[j][terms[j]] = s, coef[j][terms[j]++] = a.fast.bt[j * n + s];
  }
  const int vec_end = cin / L * L;
  for (int t = 0; t < tiles; ++t) {
    const In* rows[kMaxFastPoints + 1];
    const int64_t first = (b0 + t / d) * md + t % d - h;  // the tile's first input row
    for (int s = 0; s < n; ++s) rows[s] = in + (first + int64_t(s) * d) * a.in_stride;
    Out* out = v + int64_t(t) * cin;
    for (int c = 0; c < vec_end; c += L)
      for (int j = 0; j < n; ++j) {
        R acc = V::mul(V::set1(coef[j][0]), vload<V>(rows[tap[j][0]] + c));
        for (int e = 1; e < terms[j]; ++e) acc = V::fmadd(V::set1(coef[j][e]), vload<V>(rows[tap[j][e]] + c), acc);
        vstore<V>(out + j * point_stride + c, acc);
      }
    for (int c = vec_end; c < cin; ++c)
      for (int j = 0; j < n; ++j) {
        R acc = V::mul(V::set1(coef[j][0]), V::set1(to_f32(rows[tap[j][0]][c])));
        for (int e = 1; e < terms[j]; ++e)
          acc = V::fmadd(V::set1(coef[j][e]), V::set1(to_f32(rows[tap[j][e]][c])), acc);
        float r[L];
        V::store(r, acc);
        out[j * point_stride + c] = from_f32<Out>(r[0]);
      }
  }
}

// The index of a transform row's first nonzero coefficient (every row has one).
constexpr int first_nonzero(const float* row) {
  int j = 0;
  while (row[j] == 0.f) ++j;
  return j;
}

// Output transform of one tile and panel: y[i * y_stride + c] = sum_j at[i][j] m[j * m_stride + c]
// for the m outputs i and NR columns c, summed in the order of j, zero coefficients skipped.
template <class V, int NR>
inline void fast_output_transform(const FastConv& f, const float* mt, int64_t m_stride, float* y, int64_t y_stride) {
  using R = typename V::reg;
  constexpr int L = V::lanes;
  const int n = f.n;
  for (int c = 0; c < NR; c += L) {
    R mv[kMaxFastPoints + 1];
    for (int j = 0; j < n; ++j) mv[j] = V::load(mt + j * m_stride + c);
    for (int i = 0; i < f.m; ++i) {
      const float* at = f.at + i * n;
      const int j0 = first_nonzero(at);
      R acc = V::mul(V::set1(at[j0]), mv[j0]);
      for (int j = j0 + 1; j < n; ++j)
        if (at[j] != 0.f) acc = V::fmadd(V::set1(at[j]), mv[j], acc);
      V::store(y + i * y_stride + c, acc);
    }
  }
}

// Calls f(std::integral_constant<int, i>) for i = 0 .. N - 1, unrolled (forced inline: GCC
// otherwise keeps some of these calls, and the registers they were to fill go through memory).
template <typename F, int... I>
B2F_ALWAYS_INLINE void unroll_seq(F&& f, std::integer_sequence<int, I...>) {
  (f(std::integral_constant<int, I>{}), ...);
}
template <int N, typename F>
B2F_ALWAYS_INLINE void unroll(F&& f) {
  unroll_seq(f, std::make_integer_sequence<int, N>{});
}

// The transforms of F(M, RK) as compile-time constants (winograd.h builds the engine's tables
// with the same function), for the tile sizes the engine picks. The table-driven versions
// above are load-bound: per multiply-add one load of an input row and one broadcast of a
// coefficient, because neither fits in registers for a run-time n. Here a tile's n input (or
// product) vectors are loaded once into registers and the coefficients are constants, so a
// transform costs its multiply-adds. The terms and their order are the table-driven ones:
// the results are bit-identical.
template <int M, int RK>
struct FixedWinograd {
  static constexpr int N = M + RK - 1;
  static constexpr WinogradTables t = winograd_tables(M, RK);
};

// point j of one vector of channels: sum over s of bt[j][s] x[s], nonzero terms in order of s.
template <class V, class W, int J>
B2F_ALWAYS_INLINE typename V::reg fixed_point(const typename V::reg* x) {
  constexpr int s0 = first_nonzero(W::t.bt[J]);
  typename V::reg acc = V::mul(V::set1(W::t.bt[J][s0]), x[s0]);
  unroll<W::N>([&](auto s) {
    if constexpr (s > s0 && W::t.bt[J][s] != 0.f) acc = V::fmadd(V::set1(W::t.bt[J][s]), x[s], acc);
  });
  return acc;
}

// fast_input_transform_into with F(M, RK)'s coefficients as constants.
template <class V, int M, int RK, typename In, typename Out>
inline void fast_input_transform_fixed(const ConvArgs& a, int64_t b0, int tiles, Out* v, int64_t point_stride) {
  using R = typename V::reg;
  using W = FixedWinograd<M, RK>;
  constexpr int L = V::lanes, N = W::N;
  const int d = a.dil, cin = a.cin;
  const int64_t md = int64_t(M) * d, h = int64_t(RK / 2) * d;
  const In* in = static_cast<const In*>(a.in);
  const int vec_end = cin / L * L;
  for (int t = 0; t < tiles; ++t) {
    const In* rows[N];
    const int64_t first = (b0 + t / d) * md + t % d - h;  // the tile's first input row
    for (int s = 0; s < N; ++s) rows[s] = in + (first + int64_t(s) * d) * a.in_stride;
    Out* out = v + int64_t(t) * cin;
    for (int c = 0; c < vec_end; c += L) {
      R x[N];
      unroll<N>([&](auto s) { x[s] = vload<V>(rows[s] + c); });
      unroll<N>([&](auto j) { vstore<V>(out + j * point_stride + c, fixed_point<V, W, j>(x)); });
    }
    for (int c = vec_end; c < cin; ++c) {
      R x[N];
      unroll<N>([&](auto s) { x[s] = V::set1(to_f32(rows[s][c])); });
      unroll<N>([&](auto j) {
        float r[L];
        V::store(r, fixed_point<V, W, j>(x));
        out[j * point_stride + c] = from_f32<Out>(r[0]);
      });
    }
  }
}

// fast_output_transform with F(M, RK)'s coefficients as constants.
template <class V, int NR, int M, int RK>
inline void fast_output_transform_fixed(const float* mt, int64_t m_stride, float* y, int64_t y_stride) {
  using R = typename V::reg;
  using W = FixedWinograd<M, RK>;
  constexpr int L = V::lanes, N = W::N;
  for (int c = 0; c < NR; c += L) {
    R mv[N];
    unroll<N>([&](auto j) { mv[j] = V::load(mt + j * m_stride + c); });
    unroll<M>([&](auto i) {
      constexpr int j0 = first_nonzero(W::t.at[i]);
      R acc = V::mul(V::set1(W::t.at[i][j0]), mv[j0]);
      unroll<N>([&](auto j) {
        if constexpr (j > j0 && W::t.at[i][j] != 0.f) acc = V::fmadd(V::set1(W::t.at[i][j]), mv[j], acc);
      });
      V::store(y + i * y_stride + c, acc);
    });
  }
}

// fast_input_transform_into in the ConvArgs' types: input fp32 or bf16 (in_bf16), V fp32 or
// bf16 (bf16 products); with constant coefficients when M > 0.
template <class V, int M, int RK, typename In, typename Out>
inline void fast_input_transform_typed(const ConvArgs& a, int64_t b0, int tiles, void* v, int64_t point_stride) {
  if constexpr (M > 0)
    fast_input_transform_fixed<V, M, RK, In, Out>(a, b0, tiles, static_cast<Out*>(v), point_stride);
  else
    fast_input_transform_into<V, In, Out>(a, b0, tiles, static_cast<Out*>(v), point_stride);
}

template <class V, int M, int RK>
inline void fast_input_transform(const ConvArgs& a, int64_t b0, int tiles, void* v, int64_t point_stride) {
  if (a.bf16 && a.in_bf16)
    fast_input_transform_typed<V, M, RK, uint16_t, uint16_t>(a, b0, tiles, v, point_stride);
  else if (a.bf16)
    fast_input_transform_typed<V, M, RK, float, uint16_t>(a, b0, tiles, v, point_stride);
  else if (a.in_bf16)
    fast_input_transform_typed<V, M, RK, uint16_t, float>(a, b0, tiles, v, point_stride);
  else
    fast_input_transform_typed<V, M, RK, float, float>(a, b0, tiles, v, point_stride);
}

// The GEMMs, output transform and epilogue of a fast conv for the tile blocks [tb0, tb1) and
// output panels [q0, q1): v holds the blocks' transformed inputs [n][tiles][cin] (tiles =
// (tb1 - tb0) d), mt is scratch for the products [tiles][n][(q1 - q0) NR], y for one block's
// rows of one panel [m d][NR]. Per transform point j and panel one GEMM over the tiles (K's
// micro-kernel on the transformed weights U_j); then per block and panel the output transform
// into the block's rows in position order, and K's epilogue on the rows inside [p0, p1).
template <class K, int M, int RK>
inline void fast_blocks(const ConvArgs& a, const void* v, int64_t tb0, int64_t tb1, int q0, int q1, float* mt,
                        float* y) {
  constexpr int MR = K::MR, NR = K::NR;
  const int n = a.fast.n, d = a.dil, cin = a.cin;
  const int64_t md = int64_t(a.fast.m) * d, es = a.bf16 ? 2 : 4;
  const int tiles = int((tb1 - tb0) * d), width = (q1 - q0) * NR;
  const int64_t point_bytes = tap_elems<NR>(cin, a.bf16) * es;
  const char* u = static_cast<const char*>(a.w);
  for (int j = 0; j < n; ++j)
    for (int panel = q0; panel < q1; ++panel) {
      const char* uj = u + (int64_t(panel) * n + j) * point_bytes;
      for (int g = 0; g < tiles; g += MR) {
        const char* x = static_cast<const char*>(v) + (int64_t(j) * tiles + g) * cin * es;
        float* out = mt + (int64_t(g) * n + j) * width + (panel - q0) * NR;
        with_rows<MR>(std::min(MR, tiles - g), [&](auto r) {
          micro_any<K, decltype(r)::value>(a.bf16, x, cin, 0, uj, 1, cin, out, int64_t(n) * width);
        });
      }
    }
  for (int64_t b = tb0; b < tb1; ++b) {
    const int64_t lo = std::max(a.p0, b * md), hi = std::min(a.p1, (b + 1) * md);
    if (lo >= hi) continue;
    for (int panel = q0; panel < q1; ++panel) {
      for (int phase = 0; phase < d; ++phase) {
        const float* mp = mt + ((b - tb0) * d + phase) * n * width + (panel - q0) * NR;
        if constexpr (M > 0)
          fast_output_transform_fixed<typename K::Vec, NR, M, RK>(mp, width, y + phase * NR, int64_t(d) * NR);
        else
          fast_output_transform<typename K::Vec, NR>(a.fast, mp, width, y + phase * NR, int64_t(d) * NR);
      }
      const int col0 = panel * NR;
      K::epilogue(a.epi, y + (lo - b * md) * NR, int(hi - lo), lo, col0, std::min(NR, a.cout - col0));
    }
  }
}

// The largest transformed input of a whole range that a fast conv keeps to read its weights
// once (panel-major, below).
constexpr int64_t kFastShareBytes = 16 << 20;

// Fast convolution: Winograd F(m, k) tiles (winograd.h) over the blocks of m * dil positions
// that cover [p0, p1). Like the direct convolution's loop orders (for_each_tile), two ways to
// share the work, by which data is larger:
// - tile-major (the transformed inputs V outweigh the transformed weights U): a task takes
//   consecutive blocks whose V per transform point fill kFastPointBytes, transforms them and
//   runs every panel over them; every task streams all of U once.
// - panel-major (U outweighs V, as in short tiles of the last tower layers and the dilated
//   layers): the whole range's V is transformed first (tasks over blocks), then a task is one
//   panel over every tile: each weight is read once, V once per panel. Not for the backward
//   pass's data-gradient convs that route through a max-pool (Epilogue::unpool): each panel's
//   pass would then write its slice of two pre-pool rows per position over the whole range,
//   missing the cache on every output line again. Basenji2's op 2 over one backward tile
//   (1,100 positions, 399 -> 339 channels, one thread): 8.2 ms panel-major, 7.4 tile-major;
//   ops 3-5 the same either way.
template <class K, int M, int RK>
inline void conv_fast_tiles(const ConvArgs& a) {
  constexpr int MR = K::MR, NR = K::NR;
  const int m = a.fast.m, n = a.fast.n, d = a.dil, cin = a.cin;
  const int64_t md = int64_t(m) * d;
  const int64_t b0 = floor_to(a.p0, md) / md, b1 = ceil_to(a.p1, md) / md;
  const int64_t nb = b1 - b0;
  const int panels = (a.cout + NR - 1) / NR, coutp = panels * NR;
  const int64_t es = a.bf16 ? 2 : 4;
  const int64_t v_bytes = n * nb * d * cin * es, u_bytes = n * cin * coutp * es;
  const bool panel_major = v_bytes < u_bytes && v_bytes <= kFastShareBytes && !a.epi.unpool;
  if (panel_major) {
    thread_local Scratch v_buf;  // the calling thread's; the tasks read it
    void* v = v_buf.get<char>(size_t(v_bytes));
    const int64_t per = std::max<int64_t>(1, (nb + a.threads - 1) / a.threads);
    parallel_tasks((nb + per - 1) / per, a.threads, [&](int64_t task) {
      const int64_t tb0 = b0 + task * per, tb1 = std::min(b1, tb0 + per);
      const int64_t skip = (tb0 - b0) * d * cin;  // this task's first tile in each point's rows
      const int tiles = int((tb1 - tb0) * d);
      fast_input_transform<typename K::Vec, M, RK>(a, tb0, tiles, static_cast<char*>(v) + skip * es, nb * d * cin);
    });
    parallel_tasks(panels, a.threads, [&](int64_t panel) {
      thread_local Scratch m_buf, y_buf;
      float* mt = m_buf.get<float>(size_t(nb * d) * n * NR);
      float* y = y_buf.get<float>(size_t(md) * NR);
      fast_blocks<K, M, RK>(a, v, b0, b1, int(panel), int(panel) + 1, mt, y);
    });
    return;
  }
  // Blocks per task: a transform point's inputs of a task fill kFastPointBytes, and every
  // thread gets the same number of tasks.
  int64_t per = std::max<int64_t>(1, std::max<int64_t>(2 * MR, kFastPointBytes / (es * cin)) / d);
  int64_t ntasks = (nb + per - 1) / per;
  if (a.threads > 1) {
    ntasks = std::min(nb, (std::max<int64_t>(ntasks, 1) + a.threads - 1) / a.threads * a.threads);
    per = (nb + ntasks - 1) / ntasks;
    ntasks = (nb + per - 1) / per;
  }
  parallel_tasks(ntasks, a.threads, [&](int64_t task) {
    thread_local Scratch v_buf, m_buf, y_buf;
    const int64_t tb0 = b0 + task * per, tb1 = std::min(b1, tb0 + per);
    const int tiles = int((tb1 - tb0) * d);
    void* v = v_buf.get<char>(size_t(n) * tiles * cin * es);
    float* mt = m_buf.get<float>(size_t(tiles) * n * coutp);
    float* y = y_buf.get<float>(size_t(md) * NR);
    fast_input_transform<typename K::Vec, M, RK>(a, tb0, tiles, v, int64_t(tiles) * cin);
    fast_blocks<K, M, RK>(a, v, tb0, tb1, 0, panels, mt, y);
  });
}

// Fast convolution, the tile sizes the engine picks (model.py's FAST_TILES) with constant
// transform coefficients, any other F(m, k) table-driven.
template <class K>
inline void conv_fast(const ConvArgs& a) {
  switch (a.fast.m * 100 + a.k) {
    case 203: return conv_fast_tiles<K, 2, 3>(a);
    case 403: return conv_fast_tiles<K, 4, 3>(a);
    case 603: return conv_fast_tiles<K, 6, 3>(a);
    case 205: return conv_fast_tiles<K, 2, 5>(a);
    case 405: return conv_fast_tiles<K, 4, 5>(a);
    case 605: return conv_fast_tiles<K, 6, 5>(a);
    case 803: return conv_fast_tiles<K, 8, 3>(a);
    case 805: return conv_fast_tiles<K, 8, 5>(a);
    default: return conv_fast_tiles<K, 0, 0>(a);
  }
}

template <class K>
inline void run_conv(const ConvArgs& a) {
  if (a.fast.m > 0) conv_fast<K>(a);
  else conv_direct<K>(a);
}

// KernelSet::dgelu_mul: whole vectors, then the last n % lanes elements masked.
template <class V>
inline void run_dgelu_mul(const float* x, const float* d, float* g, int64_t n, Gelu v, bool add) {
  using R = typename V::reg;
  constexpr int L = V::lanes;
  int64_t j = 0;
  for (; j + L <= n; j += L) {
    R r = V::mul(vgelu_grad<V>(V::load(x + j), v), V::load(d + j));
    V::store(g + j, add ? V::add(V::load(g + j), r) : r);
  }
  if (j < n) {
    const int m = int(n - j);
    R r = V::mul(vgelu_grad<V>(V::load_n(x + j, m), v), V::load_n(d + j, m));
    V::store_n(g + j, add ? V::add(V::load_n(g + j, m), r) : r, m);
  }
}

// The one-hot stem: per position, the sum of one table row per tap (no multiplies).
// A task is a block of positions over every panel: the rows' table offsets are worked out
// once per block, then each panel gathers its slice of those rows (K::sum_rows: the ISA's
// vectors, a register tile's positions interleaved).
template <class K>
inline void run_stem(const StemArgs& a) {
  constexpr int MR = K::MR, NR = K::NR;
  constexpr int kMaxTaps = 64;  // stem kernel sizes up to 63 taps, table offsets int32 (checked by the engine)
  constexpr int64_t block = int64_t(MR) * kTilesPerBlock;
  const int64_t padded = ((a.cout + NR - 1) / NR) * NR;
  const int half = a.k / 2, panels = int(padded / NR);
  const int64_t nblocks = (a.p1 - a.p0 + block - 1) / block;
  parallel_tasks(nblocks, a.threads, [&](int64_t task) {
    alignas(64) float tile[K::MR * K::NR];  // K::, not a local constexpr: GCC 12 fails on the latter
    int32_t off[block * kMaxTaps];
    const int64_t b0 = a.p0 + task * block, b1 = std::min(b0 + block, a.p1);
    for (int64_t p = b0; p < b1; ++p) {
      const uint8_t* codes = a.codes + p - int64_t(half) * a.dil;
      for (int t = 0; t < a.k; ++t)
        off[(p - b0) * kMaxTaps + t] = int32_t((t * kStemCodes + codes[int64_t(t) * a.dil]) * padded);
    }
    for (int panel = 0; panel < panels; ++panel) {
      const int col0 = panel * NR;
      for (int64_t p = b0; p < b1; p += MR) {
        const int rows = int(std::min<int64_t>(MR, b1 - p));
        with_rows<MR>(rows, [&](auto r) {
          K::template sum_rows<decltype(r)::value>(a.table + col0, off + (p - b0) * kMaxTaps, kMaxTaps, a.k, tile);
        });
        K::epilogue(a.epi, tile, rows, p, col0, std::min(NR, a.cout - col0));
      }
    }
  });
}

}  // namespace B2F_ISA_NS
}  // namespace cpu
}  // namespace b2f

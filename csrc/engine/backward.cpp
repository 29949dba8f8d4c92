// The backward pass: the gradient of a summed prediction with respect to the one-hot input.
//
// Every convolution of the backward runs through the CPU kernels' ordinary conv entry: the
// data gradient of conv(k, dil, cin -> cout) is conv(k, dil, cout -> cin) with the kernel
// flipped along k and transposed, packed by Engine::pack like any forward op. What is not a
// convolution (GELU', max-pool routing, crop padding, the residual sums, the softplus' of the
// head) is plain elementwise code here.
//
// Memory: a recording forward pass runs the stem and tower tile by tile as the forward does,
// and keeps what the backward reads: the pre-activation rows of every tensor after the stem's
// output (the input of every GELU' but the first tower op's) and one bit per pooled element
// for each max-pool's choice. With bins chosen it computes and keeps only the rows the
// gradient needs (plan_rows), and the backward computes only the rows the gradient reaches.
// The stem's output, the largest tensor (65,536 x 288 for Basenji2), is never held: the
// backward recomputes it tile by tile (a table gather, no multiplies). The backward weights are packed per call, one op (or the tower's ops) at a
// time, and released after use: they would otherwise double the weights' memory.
#include <algorithm>
#include <atomic>
#include <cstring>
#include <iterator>
#include <map>
#include <mutex>
#include <memory>
#include <stdexcept>

#include "basenji2_fast/parallel.h"
#include "engine.h"

namespace b2f {

namespace {
[[noreturn]] void fail(const std::string& msg) { throw std::invalid_argument(msg); }

// Rows [lo, hi) of a channels-last fp32 tensor, addressed in the tensor's own coordinates;
// the memory from the engine's block pool, returned on release.
struct Rows {
  Block buf;
  BlockPool* pool = nullptr;
  size_t capacity = 0;
  int64_t lo = 0, hi = 0;
  int ch = 0;
  Rows() = default;
  Rows(Rows&& o) noexcept { *this = std::move(o); }
  Rows& operator=(Rows&& o) noexcept {
    release();
    buf = std::move(o.buf), pool = o.pool, capacity = o.capacity, lo = o.lo, hi = o.hi, ch = o.ch;
    o.pool = nullptr;
    return *this;
  }
  ~Rows() { release(); }
  void alloc(BlockPool& p, int64_t l, int64_t h, int c) {
    release();
    lo = l, hi = h, ch = c, pool = &p;
    buf = p.get(size_t((h - l) * c), capacity);
  }
  void zeros(BlockPool& p, int64_t l, int64_t h, int c) {
    alloc(p, l, h, c);
    zero();
  }
  void zero() { std::memset(buf.get(), 0, size_t((hi - lo) * ch) * sizeof(float)); }
  // Zeroes the rows of [lo, hi) outside [a, b): the "same" padding beyond a tensor's ends.
  void zero_outside(int64_t a, int64_t b) {
    const int64_t m0 = std::min(hi, std::max(lo, a)), m1 = std::max(m0, std::min(hi, b));
    std::memset(buf.get(), 0, size_t((m0 - lo) * ch) * sizeof(float));
    std::memset(buf.get() + (m1 - lo) * ch, 0, size_t((hi - m1) * ch) * sizeof(float));
  }
  float* row(int64_t q) const { return buf.get() + (q - lo) * ch; }
  float* origin() const { return buf.get() - lo * ch; }  // position-origin (kernels.h)
  bool empty() const { return !buf; }
  void release() {
    if (buf && pool) pool->put(std::move(buf), capacity);
    buf.reset();
  }
};

// The choices of a max-pool of size 2 over pooled rows [lo, hi), as the forward's epilogue
// records them (cpu::Epilogue::choice): one bit per pooled element, set where the odd row
// of its pair was taken; 8 channels a byte, whole bytes per row.
struct PoolChoice {
  std::vector<uint8_t> bytes;
  int64_t lo = 0, stride = 0;  // first row; bytes per row
  void init(int64_t l, int64_t h, int ch) {
    lo = l, stride = (ch + 7) / 8;
    bytes.assign(size_t((h - l) * stride), 0);
  }
  const uint8_t* row(int64_t r) const { return bytes.data() + (r - lo) * stride; }
  uint8_t* origin() { return bytes.data() - lo * stride; }  // position-origin, for the epilogues
  const uint8_t* origin() const { return bytes.data() - lo * stride; }
};

// kLaneMask[b][k]: all ones when bit k of b is set: a byte of choices as an 8-lane mask.
struct LaneMasks {
  uint32_t m[256][8];
  LaneMasks() {
    for (int b = 0; b < 256; ++b)
      for (int k = 0; k < 8; ++k) m[b][k] = (b >> k) & 1 ? 0xFFFFFFFFu : 0u;
  }
};
const LaneMasks kLaneMask;

// Runs f(r0, r1) over rows [a, b) in parallel blocks.
template <typename F>
void parallel_rows(int64_t a, int64_t b, int threads, F&& f) {
  if (b <= a) return;
  const int64_t block = std::max<int64_t>(16, (b - a + 4 * threads - 1) / (4 * std::max(1, threads)));
  const int64_t nblocks = (b - a + block - 1) / block;
  parallel_for(nblocks, threads, [&](int64_t j0, int64_t j1) {
    for (int64_t j = j0; j < j1; ++j) f(a + j * block, std::min(b, a + (j + 1) * block));
  });
}
}  // namespace

class Backward {
 public:
  Backward(const Engine& e, const HeadRequest& req, const std::vector<int>& bins, const std::vector<KernelRef>& kernels);
  // One sequence: codes [seq_length] -> out [seq_length][4].
  void run(const uint8_t* codes, bool n_uniform, float* out);

 private:
  using Packed = Engine::Packed;
  const Engine& e_;
  const HeadRequest& req_;
  const std::vector<KernelRef>& kernels_;  // the fast ops' untransformed kernels (Engine::gradient)
  std::vector<int> bins_;
  const int n_, P_, threads_;
  const Gelu gelu_;
  // Per sequence: padded codes; raw_[i]: tensor i's pre-activation rows (GELU' of them where
  // dgelu_only_[i]), whole, with its halo of zero rows (i >= keep_from_; a tower tensor only
  // the rows the recording's running tiles touch when bins are chosen, record_forward);
  // odd_[i]: op i's max-pool choices (pooled ops >= 1).
  std::vector<uint8_t> padded_;
  const uint8_t* code0_ = nullptr;
  bool n_uniform_ = false;
  int keep_from_ = 2;
  // dgelu_only_[i]: tensor i (a tower tensor, 1 <= i < P) is read raw only for op i's GELU'
  // (op i reads it activated; no residual adds it): its recording stores GELU' of its rows
  // instead, computed beside the forward's GELU from the same exp, and the backward's
  // data-gradient conv of op i multiplies by it without an exp of its own.
  std::vector<char> dgelu_only_;
  BlockPool& pool_;  // the engine's, kept between calls (Engine::gradient_blocks_)
  std::vector<Rows> raw_, act_, grad_;  // after pool_: destroyed first, their blocks back to it
  std::vector<PoolChoice> odd_;
  // The tower's top ops [top_, P) run whole before the tiles (multi-threaded, each weight read
  // once): top_pre_ is op top_ - 1's pre-pool output gradient, whole, that the tiles start from
  // (empty: the tiles start from grad_[P]).
  int top_ = 0;
  Rows top_pre_;
  // Row ranges [first, second) per tensor (empty: first >= second), from plan_rows: nz_[i] the
  // rows outside which the gradient of tensor i is zero (the chosen bins' receptive field, from
  // the head down; its data-gradient convs compute only the rows it reaches), exact_[i] the rows
  // the recording forward must compute exactly (those, and what the forward reads to make them).
  using Range = std::pair<int64_t, int64_t>;
  std::vector<Range> nz_, exact_;
  static void grow(Range& r, int64_t lo, int64_t hi) {  // r grows to cover [lo, hi) (not empty)
    r = r.first >= r.second ? Range{lo, hi} : Range{std::min(r.first, lo), std::max(r.second, hi)};
  }

  int64_t L(int i) const { return e_.lengths_[i]; }
  int C(int i) const { return e_.channels_[i]; }
  const OpDesc& op(int i) const { return e_.ops_[i]; }

  // Forward.
  void plan_rows();
  void record_forward();
  void record_op(int i, const float* in, const float* res, int64_t p0, int64_t p1, float* raw_out, float* act_out);
  // The elementwise steps and kernel calls below run on `threads` threads (1 inside a tile
  // that a thread of the tiled backward owns).
  // Backward.
  void head_backward(Rows& dh);
  void reached_rows(int i, int64_t a, int64_t b, int64_t& s, int64_t& t) const;
  void whole_backward();
  int64_t backward_tiles() const;
  void tile_ranges(int64_t a, int64_t b, std::vector<int64_t>& s, std::vector<int64_t>& t) const;
  void tiled_backward(float* out);
  void tile_backward(int64_t A, int64_t B, const std::vector<Packed>& w, const Packed& ws, int threads,
                     float* out) const;
  Rows conv_down(int i, const Packed& w, const float* pre, int64_t s, int64_t t, int64_t lo, int64_t hi,
                 const float* x, const PoolChoice* choice, int threads) const;
  // Kernels.
  Packed transposed(int i) const;
  Packed transposed_packing(const Packed& f, int k, int cin, int j0, int j1) const;
  Packed stem_transposed() const;
  void conv(const Packed& w, int k, int dil, int cin, int cout, const float* in, int64_t in_stride, int64_t p0,
            int64_t p1, float* out, int64_t out_stride, int threads, const float* res = nullptr,
            int64_t res_stride = 0) const;
  void conv(const Packed& w, int k, int dil, int cin, int cout, const float* in, int64_t in_stride, int64_t p0,
            int64_t p1, cpu::Epilogue epi, int threads) const;
  void route(int i, const float* g, int64_t g_stride, const PoolChoice* choice, int64_t q0, int64_t q1, Rows& pre,
             int threads) const;
  void combine(const float* x, const float* d, float* g, int64_t rows, int ch, bool gelu_in, bool add,
               int threads) const;
};

Backward::Backward(const Engine& e, const HeadRequest& req, const std::vector<int>& bins,
                   const std::vector<KernelRef>& kernels)
    : e_(e), req_(req), kernels_(kernels), n_(e.n_ops()), P_(e.prefix_), threads_(e.threads_), gelu_(e.gelu_),
      pool_(e.gradient_blocks_) {
  for (int i = 0; i < n_; ++i)
    if (e.ops_[i].type == OpDesc::Conv && e.ops_[i].bf16)
      fail("gradients are computed in fp32: op " + std::to_string(i) + " runs in bf16 (load the model in fp32)");
  if (e.head_bf16_) fail("gradients are computed in fp32: the heads run in bf16 (load the model in fp32)");
  for (int i = 1; i < n_; ++i)
    if (e.ops_[i].type == OpDesc::Conv && e.ops_[i].fast_m && (size_t(i) >= kernels.size() || !kernels[i].data))
      fail("op " + std::to_string(i) + " runs fast convolution (its packing holds transformed weights): "
           "the gradient needs its kernel [k, cin, cout]");
  if (req.head < 0 || req.head >= e.n_heads()) fail("no head " + std::to_string(req.head));
  for (int t : req.tracks)
    if (t < 0 || t >= e.head_tracks(req.head)) fail("track index " + std::to_string(t) + " out of range");
  if (bins.empty()) {
    bins_.resize(size_t(e.n_bins()));
    for (int b = 0; b < int(e.n_bins()); ++b) bins_[b] = b;
  } else {
    for (int b : bins)
      if (b < 0 || b >= e.n_bins()) fail("bin " + std::to_string(b) + " out of range (0.." + std::to_string(e.n_bins() - 1) + ")");
    bins_ = bins;
  }
  // The stem's output (tensor 1) is recomputed by the backward unless it is the whole
  // prefix's output, which the later ops read whole anyway.
  keep_from_ = P_ == 1 ? 1 : 2;
  dgelu_only_.assign(size_t(n_ + 1), 0);
  for (int i = 1; i < P_; ++i) dgelu_only_[i] = op(i).type == OpDesc::Conv && op(i).gelu_in;
  for (int i = 0; i < n_; ++i)
    if (op(i).type == OpDesc::Conv && op(i).residual >= 0) dgelu_only_[size_t(op(i).residual)] = 0;
}

// ---------------------------------------------------------------------------------------------
// kernels

void Backward::conv(const Packed& w, int k, int dil, int cin, int cout, const float* in, int64_t in_stride, int64_t p0,
                    int64_t p1, float* out, int64_t out_stride, int threads, const float* res,
                    int64_t res_stride) const {
  cpu::Epilogue epi;
  epi.res = res, epi.res_stride = res_stride;
  epi.out = out, epi.out_stride = out_stride;
  conv(w, k, dil, cin, cout, in, in_stride, p0, p1, epi, threads);
}

void Backward::conv(const Packed& w, int k, int dil, int cin, int cout, const float* in, int64_t in_stride, int64_t p0,
                    int64_t p1, cpu::Epilogue epi, int threads) const {
  cpu::ConvArgs a;
  a.in = in, a.in_stride = in_stride;
  a.epi = epi;
  w.feed(a);  // fp32: the backward packs its weights in fp32 (feed sets the zero bias)
  a.epi.gelu = gelu_;
  a.k = k, a.dil = dil, a.cin = cin, a.cout = cout;
  a.p0 = p0, a.p1 = p1, a.threads = threads;
  e_.kernels_->conv(a);
}

// The data-gradient convs' weights, packed straight into the kernels' layout (Engine::pack's
// [panel][tap][cin][nr]) with the output panels in parallel: the backward packs them per call,
// so the packing is part of every gradient's time.

Engine::Packed Backward::transposed_packing(const Packed& f, int k, int cin, int j0, int j1) const {
  // f packs a direct kernel [k][cin][cout] (panels of its cout). The result packs the
  // data-gradient conv of its columns [j0, j1): the kernel [k][j1 - j0][cin] flipped along k,
  // w'[t'][j - j0][c] = w[k - 1 - t'][c][j].
  const int nr = e_.kernels_->nr, panels = (cin + nr - 1) / nr, cj = j1 - j0;
  Packed p;
  p.bias.assign(size_t(panels) * nr, 0.f);
  p.w.assign(size_t(panels) * k * cj * nr, 0.f);
  parallel_for(panels, threads_, [&](int64_t q0, int64_t q1) {
    for (int64_t q = q0; q < q1; ++q) {
      const int c0 = int(q) * nr, nc = std::min(nr, cin - c0);
      for (int tp = 0; tp < k; ++tp)
        for (int j = j0; j < j1; ++j) {  // nr consecutive columns j read the same cache lines
          const float* src = f.w.data() + ((size_t(j / nr) * k + (k - 1 - tp)) * cin + c0) * nr + j % nr;
          float* dst = p.w.data() + ((size_t(q) * k + tp) * cj + (j - j0)) * nr;
          for (int c = 0; c < nc; ++c) dst[c] = src[size_t(c) * nr];
        }
    }
  });
  return p;
}

Engine::Packed Backward::transposed(int i) const {
  // Op i's data-gradient conv: the forward's shape (k, dilation, same length) from cout to
  // cin channels. A direct op's kernel is read back from its packing; a fast op's packing
  // holds transformed weights, so its kernel is the one lent to Engine::gradient
  // ([k][cin][cout]), and its data-gradient conv runs as the same Winograd F(m, k) on the
  // same tile blocks: U'[p][j][c] = sum_t' G[p][t'] w[k - 1 - t'][c][j], summed in float64
  // in the order Engine::pack_fast sums, one tap per transform point.
  const OpDesc& o = op(i);
  const int k = o.k, cin = o.cin, cout = o.cout;
  if (!o.fast_m) return transposed_packing(e_.packed_[i], k, cin, 0, cout);
  const int nr = e_.kernels_->nr, panels = (cin + nr - 1) / nr;
  const KernelRef& src = kernels_[size_t(i)];
  Packed p;
  p.wino = make_winograd(o.fast_m, k);
  const int n = p.wino.n;
  const double* g = p.wino.g.data();
  p.bias.assign(size_t(panels) * nr, 0.f);
  p.w.assign(size_t(panels) * n * cout * nr, 0.f);
  parallel_for(panels, threads_, [&](int64_t q0, int64_t q1) {
    std::vector<double> blk(size_t(k) * nr * nr), acc(static_cast<size_t>(nr));  // blk [t][j][c]: a block per tap
    for (int64_t q = q0; q < q1; ++q) {
      const int c0 = int(q) * nr, nc = std::min(nr, cin - c0);
      for (int b0 = 0; b0 < cout; b0 += nr) {
        const int nj = std::min(nr, cout - b0);
        for (int t = 0; t < k; ++t)
          for (int c = 0; c < nc; ++c) {
            const size_t row = (size_t(t) * cin + c0 + c) * cout + b0;
            for (int j = 0; j < nj; ++j) blk[(size_t(t) * nr + j) * nr + c] = weight_at(src.data, src.bf16, row + j);
          }
        for (int pt = 0; pt < n; ++pt)
          for (int j = 0; j < nj; ++j) {
            std::fill(acc.begin(), acc.end(), 0.0);
            for (int tp = 0; tp < k; ++tp) {
              const double gt = g[size_t(pt) * k + tp];
              if (gt == 0.0) continue;
              const double* b = blk.data() + (size_t(k - 1 - tp) * nr + j) * nr;
              for (int c = 0; c < nc; ++c) acc[c] += gt * b[c];
            }
            float* dst = p.w.data() + ((size_t(q) * n + pt) * cout + b0 + j) * nr;
            for (int c = 0; c < nc; ++c) dst[c] = float(acc[c]);
          }
      }
    }
  });
  return p;
}

Engine::Packed Backward::stem_transposed() const {
  // The stem's data gradient as a 1x1 conv cout -> k*4 (column t*4 + ch = tap t, base ch),
  // summed over the taps afterwards: four output channels per tap would waste most lanes.
  const OpDesc& s = op(0);
  const int k = s.k, cout = s.cout;
  std::vector<float> w(size_t(cout) * k * 4);
  for (int t = 0; t < k; ++t)
    for (int ch = 0; ch < 4; ++ch)
      for (int j = 0; j < cout; ++j) w[size_t(j) * k * 4 + t * 4 + ch] = e_.stem_kernel_[(size_t(t) * 4 + ch) * cout + j];
  const std::vector<float> zero(size_t(k) * 4, 0.f);
  return e_.pack(w.data(), false, zero.data(), 1, cout, k * 4, false);
}

void Backward::route(int i, const float* g, int64_t g_stride, const PoolChoice* choice, int64_t q0, int64_t q1,
                     Rows& pre, int threads) const {
  // Pre-pool gradient rows [pre.lo, pre.hi) of op i's output, from the gradient of its pooled
  // output (row r at g + r * g_stride, position-origin; choice: the pool's): each
  // pooled element's gradient goes to the row the max-pool took. Zero outside [q0, q1)
  // (beyond the tensor) and, without a pool, a copy.
  const int ch = C(i + 1), pool = op(i).pool;
  pre.zero_outside(q0, q1);
  const int64_t a = std::max(pre.lo, q0), b = std::min(pre.hi, q1);
  parallel_rows(a, b, threads, [&](int64_t r0, int64_t r1) {
    for (int64_t p = r0; p < r1; ++p) {
      const float* src = g + (p / pool) * g_stride;
      float* dst = pre.row(p);
      if (pool == 1) {
        std::memcpy(dst, src, sizeof(float) * size_t(ch));
        continue;
      }
      // The even row keeps the elements whose bit is clear, the odd row those whose bit is set.
      const uint32_t flip = p & 1 ? 0u : 0xFFFFFFFFu;
      const uint8_t* bits = choice->row(p / 2);
      const uint32_t* s32 = reinterpret_cast<const uint32_t*>(src);
      uint32_t* d32 = reinterpret_cast<uint32_t*>(dst);
      for (int c = 0; c < ch; c += 8) {
        const uint32_t* m = kLaneMask.m[bits[c / 8]];
        if (c + 8 <= ch) {
          for (int k = 0; k < 8; ++k) d32[c + k] = s32[c + k] & (m[k] ^ flip);
        } else {
          for (int k = 0; k < ch - c; ++k) d32[c + k] = s32[c + k] & (m[k] ^ flip);
        }
      }
    }
  });
}

void Backward::combine(const float* x, const float* d, float* g, int64_t rows, int ch, bool gelu_in, bool add,
                       int threads) const {
  // g (+)= gelu'(x) * d, or d for an op without pre-activation; [rows][ch] each, contiguous.
  const int64_t n = rows * ch;
  if (!gelu_in) {
    for (int64_t j = 0; j < n; ++j) g[j] = add ? g[j] + d[j] : d[j];
    return;
  }
  parallel_rows(0, n, threads, [&](int64_t a, int64_t b) { e_.kernels_->dgelu_mul(x + a, d + a, g + a, b - a, gelu_, add); });
}

// ---------------------------------------------------------------------------------------------
// the recording forward

void Backward::record_op(int i, const float* in, const float* res, int64_t p0, int64_t p1, float* raw_out,
                         float* act_out) {
  // Op i (>= 1) over pre-pool positions [p0, p1) as the forward runs it, a max-pool recording
  // its choices; raw_out / act_out are position-origin (pooled rows), either may be null.
  PoolChoice* c = op(i).pool == 2 ? &odd_[i] : nullptr;
  e_.conv_call(i, in, res, p0, p1, raw_out, act_out, 0, c ? c->origin() : nullptr, c ? c->stride : 0,
               raw_out && dgelu_only_[size_t(i + 1)]);
}

void Backward::plan_rows() {
  const int n = n_;
  const auto add = [&](std::vector<Range>& v, int i, int64_t lo, int64_t hi) {  // v[i] grows to cover [lo, hi)
    lo = std::max<int64_t>(lo, 0), hi = std::min(hi, L(i));
    if (lo < hi) grow(v[size_t(i)], lo, hi);
  };
  // From the head down: a crop shifts the rows, a residual passes them on to its source, and a
  // conv's rows [a, b) (pre-pool) need its input rows in(i, a, b, lo, hi).
  const auto down = [&](std::vector<Range>& v, auto&& in) {
    for (int i = n - 1; i >= 1; --i) {
      const OpDesc& o = op(i);
      const int64_t a = v[i + 1].first, b = v[i + 1].second;
      if (a >= b) continue;
      if (o.type == OpDesc::Crop) {
        add(v, i, a + o.left, b + o.left);
        continue;
      }
      if (o.residual >= 0) add(v, o.residual, a * o.pool, b * o.pool);
      int64_t lo, hi;
      in(i, a * o.pool, b * o.pool, lo, hi);
      add(v, i, lo, hi);
    }
  };
  // The gradient's rows (whole_backward's and the tiles' steps): the chosen bins, then what
  // each data-gradient conv reaches.
  nz_.assign(size_t(n + 1), {0, 0});
  add(nz_, n, *std::min_element(bins_.begin(), bins_.end()), *std::max_element(bins_.begin(), bins_.end()) + 1);
  down(nz_, [&](int i, int64_t a, int64_t b, int64_t& lo, int64_t& hi) { reached_rows(i, a, b, lo, hi); });
  // The forward's rows that must be exact: where the gradient is nonzero (GELU' of them, their
  // max-pool choices) and what the forward reads to compute those.
  exact_ = nz_;
  down(exact_, [&](int i, int64_t a, int64_t b, int64_t& lo, int64_t& hi) { e_.op_reads(i, a, b, lo, hi); });
}

void Backward::record_forward() {
  const int n = n_, P = P_;
  raw_.clear(), act_.clear(), odd_.clear();
  raw_.resize(n + 1), act_.resize(n + 1), odd_.resize(n);

  // The stem and tower tile by tile (Engine::run_prefix_tiled's ranges); each tile's rows of
  // the kept tensors are written into them (rows shared by two tiles twice, equal). Only the
  // tiles that write rows of exact_ run (bins far from a tile: none of its rows is read, or
  // each is read only to be multiplied by a zero gradient). The tower's kept tensors hold the
  // rows those tiles read and write ([kept[i].first, kept[i].second), whole for every bin);
  // their other rows, and tensor P's, are zero, so that the trunk, run whole, and the backward
  // read finite values everywhere.
  const int64_t tiles = e_.prefix_tiles();
  const int64_t lp = L(P);
  std::vector<int64_t> lo, hi, need_lo, need_hi;
  const auto tile_rows = [&](int64_t t) {  // tile t's ranges into lo, hi, ...; false: empty
    const int64_t a = lp * t / tiles, b = lp * (t + 1) / tiles;
    if (a < b) e_.prefix_ranges(a, b, lo, hi, need_lo, need_hi);
    return a < b;
  };
  const int k0 = std::max(keep_from_, 1);
  std::vector<char> runs(size_t(tiles), 0);
  std::vector<Range> kept(size_t(P + 1), {0, 0});
  bool every = true;
  for (int64_t t = 0; t < tiles; ++t) {
    if (!tile_rows(t)) continue;
    for (int i = k0; i <= P && !runs[t]; ++i)
      runs[t] = std::max(lo[i], exact_[i].first) < std::min(hi[i], exact_[i].second);
    every = every && runs[t];
    for (int i = k0; i <= P && runs[t]; ++i) grow(kept[size_t(i)], need_lo[i], need_hi[i]);
  }
  for (int i = keep_from_; i <= n; ++i) {
    const int64_t h = e_.halo_[i];
    const bool part = !every && i < P && kept[size_t(i)].first < kept[size_t(i)].second;
    raw_[i].alloc(pool_, part ? std::max(-h, kept[i].first) : -h, part ? std::min(L(i) + h, kept[i].second) : L(i) + h, C(i));
    if (every) raw_[i].zero_outside(0, L(i));
    else raw_[i].zero();
  }
  for (int i = 1; i < n; ++i)
    if (op(i).type == OpDesc::Conv && op(i).pool == 2) odd_[i].init(0, L(i + 1), C(i + 1));
  // Whole activated tensors from P on, for the ops (and the head) that read them.
  const auto need_act = [&](int i) { return i == n ? e_.final_gelu_ : bool(e_.need_act_[i]); };
  const auto whole_act = [&](int i) {
    if (!need_act(i)) return static_cast<float*>(nullptr);
    act_[i].alloc(pool_, -e_.halo_[i], L(i) + e_.halo_[i], C(i));
    act_[i].zero_outside(0, L(i));
    return act_[i].origin();
  };

  float* act_p = whole_act(P);
  if (!every && act_p) act_[P].zero();
  std::vector<Rows> in(P + 1);  // in[i]: op i's input rows of this tile, when not a kept tensor
  for (int64_t t = 0; t < tiles; ++t) {
    if (!runs[t] || !tile_rows(t)) continue;
    // A tile buffer of tensor i's rows as op i reads them, zero beyond the tensor's ends.
    const auto tile_buf = [&](int i) {
      in[i].alloc(pool_, need_lo[i], need_hi[i], C(i));
      in[i].zero_outside(lo[i], hi[i]);
      return in[i].origin();
    };
    // The stem, pooled as in the forward (the backward recomputes its choices).
    float *raw1 = nullptr, *act1 = nullptr;
    if (P == 1) raw1 = raw_[1].origin(), act1 = act_p;
    else if (op(1).gelu_in) act1 = tile_buf(1);
    else raw1 = tile_buf(1);
    e_.stem_call(code0_, n_uniform_, lo[1] * op(0).pool, hi[1] * op(0).pool, raw1, act1, C(1));
    for (int i = 1; i < P; ++i) {
      // Op i reads its tile, or the kept raw rows (an op without pre-activation after tensor 1).
      const float* x = op(i).gelu_in || i < keep_from_ ? in[i].origin() : raw_[i].origin();
      float* act_next = i + 1 == P ? act_p : op(i + 1).gelu_in ? tile_buf(i + 1) : nullptr;
      record_op(i, x, nullptr, lo[i + 1] * op(i).pool, hi[i + 1] * op(i).pool, raw_[i + 1].origin(), act_next);
      in[i].release();
    }
  }
  for (auto& r : in) r.release();

  // The rest as Engine::run_trunk, keeping every pre-activation tensor: each op over the rows
  // of exact_ (all of them for every bin), the others zero.
  for (int i = P; i < n; ++i) {
    const OpDesc& o = op(i);
    if (o.type == OpDesc::Crop) {
      const int64_t rows = L(i + 1), c = C(i);
      std::memcpy(raw_[i + 1].row(0), raw_[i].row(o.left), sizeof(float) * size_t(rows * c));
      if (need_act(i + 1)) std::memcpy(whole_act(i + 1) + 0, act_[i].row(o.left), sizeof(float) * size_t(rows * c));
    } else {
      const float* x = o.gelu_in ? act_[i].origin() : raw_[i].origin();
      const float* res = o.residual >= 0 ? raw_[o.residual].origin() : nullptr;
      const int64_t e0 = exact_[i + 1].first, e1 = std::max(e0, exact_[i + 1].second);
      float* act = whole_act(i + 1);
      raw_[i + 1].zero_outside(e0, e1);
      if (act) act_[i + 1].zero_outside(e0, e1);
      if (e0 < e1) record_op(i, x, res, e0 * o.pool, e1 * o.pool, raw_[i + 1].origin(), act);
    }
    act_[i].release();
  }
}

// ---------------------------------------------------------------------------------------------
// the backward

void Backward::head_backward(Rows& dh) {
  // d/dh of sum_{b in bins} sum_t softplus(h[b] W[:, t] + bias[t]) = sum_t sigmoid(z[b][t]) W[:, t]
  // (1 instead of sigmoid for a linear head), for the listed bins only, added into dh's rows.
  const Engine::Head& head = e_.heads_[req_.head];
  const Packed& panel = e_.head_panel(req_);
  const int T = req_.tracks.empty() ? head.tracks : int(req_.tracks.size()), Ch = C(n_);
  const int64_t nb = int64_t(bins_.size());
  const Rows& h = e_.final_gelu_ ? act_[n_] : raw_[n_];
  Rows hs, z, d;
  hs.alloc(pool_, 0, nb, Ch);
  for (int64_t r = 0; r < nb; ++r) std::memcpy(hs.row(r), h.row(bins_[r]), sizeof(float) * size_t(Ch));
  z.alloc(pool_, 0, nb, T);
  if (head.act == OutAct::Softplus) {  // softplus'(z) = sigmoid(z), in the epilogue
    cpu::Epilogue epi;
    epi.out = z.origin(), epi.out_stride = T, epi.out_act = OutAct::Sigmoid;
    conv(panel, 1, 1, Ch, T, hs.origin(), Ch, 0, nb, epi, threads_);
  } else {
    std::fill(z.buf.get(), z.buf.get() + nb * T, 1.f);
  }
  hs.release();
  // s [nb][T] @ W^T [T][Ch], a 1x1 conv T -> Ch, in chunks of tracks so that the transposed
  // head is never packed whole (5,313 x 1,536 for Basenji2); each chunk adds to the last.
  const int chunk = 512;
  d.alloc(pool_, 0, nb, Ch);
  for (int j0 = 0; j0 < T; j0 += chunk) {
    const int j1 = std::min(T, j0 + chunk);
    const Packed w = transposed_packing(panel, 1, Ch, j0, j1);
    conv(w, 1, 1, j1 - j0, Ch, z.buf.get() + j0, T, 0, nb, d.origin(), Ch, threads_, j0 ? d.origin() : nullptr, Ch);
  }
  for (int64_t r = 0; r < nb; ++r) {  // in list order: a repeated bin adds twice
    float* dst = dh.row(bins_[r]);
    const float* src = d.row(r);
    for (int c = 0; c < Ch; ++c) dst[c] += src[c];
  }
}

void Backward::reached_rows(int i, int64_t a, int64_t b, int64_t& s, int64_t& t) const {
  // The input rows [s, t) whose data gradient (op i's) reads any of the pre-pool
  // gradient rows [a, b), outside which the gradient is zero: empty when [a, b) is. For a fast
  // conv whole tile blocks, as a full range computes them (a block's transforms spread tiny
  // rounding residues over all its rows, so computing fewer rows changes no value).
  if (a >= b) {
    s = t = 0;
    return;
  }
  const int64_t blk = fast_block(op(i).fast_m, op(i).dil), h = e_.halo_[i];
  s = std::max<int64_t>(0, floor_to(a - h, blk)), t = std::min(L(i), ceil_to(b + h, blk));
}

void Backward::whole_backward() {
  // From the head down to tensor P, whole tensors (Basenji2: the dilated blocks, the crop
  // and the final 1x1 at 1,024 rows or fewer). grad_[i]: the gradient of tensor i's raw rows.
  const int n = n_;
  grad_.clear();
  grad_.resize(n + 1);
  Rows dh;
  dh.zeros(pool_, 0, L(n), C(n));
  head_backward(dh);
  grad_[n].alloc(pool_, 0, L(n), C(n));
  combine(raw_[n].row(0), dh.row(0), grad_[n].row(0), L(n), C(n), e_.final_gelu_, false, threads_);
  dh.release();
  const auto grad_of = [&](int i) -> Rows& {
    if (grad_[i].empty()) grad_[i].zeros(pool_, 0, L(i), C(i));
    return grad_[i];
  };
  for (int i = n - 1; i >= P_; --i) {
    const OpDesc& o = op(i);
    Rows& g = grad_[i + 1];
    const int64_t g0 = nz_[i + 1].first, g1 = nz_[i + 1].second;
    if (o.type == OpDesc::Crop) {
      Rows& gi = grad_of(i);
      const int64_t m = int64_t(L(i + 1)) * C(i);
      float* dst = gi.row(o.left);
      for (int64_t j = 0; j < m; ++j) dst[j] += g.buf[j];
    } else {
      const int64_t h = e_.halo_[i];
      Rows pre;  // the gradient of the conv's pre-pool output, with the conv's halo of zeros
      pre.alloc(pool_, -h, L(i) + h, o.cout);
      route(i, g.origin(), o.cout, o.pool == 2 ? &odd_[i] : nullptr, 0, L(i), pre, threads_);
      if (o.residual >= 0) {
        Rows& gr = grad_of(o.residual);
        const int64_t m = L(i) * o.cout;
        const float* src = pre.row(0);
        for (int64_t j = 0; j < m; ++j) gr.buf[j] += src[j];
      }
      int64_t s, t;
      reached_rows(i, g0 * o.pool, g1 * o.pool, s, t);
      Rows da;
      da.alloc(pool_, 0, L(i), o.cin);
      da.zero_outside(s, t);
      if (s < t) conv(transposed(i), o.k, o.dil, o.cout, o.cin, pre.origin(), o.cout, s, t, da.origin(), o.cin, threads_);
      pre.release();
      const bool had = !grad_[i].empty();
      if (!had) grad_[i].alloc(pool_, 0, L(i), C(i));
      combine(raw_[i].row(0), da.row(0), grad_[i].row(0), L(i), C(i), o.gelu_in, had, threads_);
    }
    g.release();
    if (i + 1 > P_) raw_[i + 1].release();
    if (i < int(odd_.size())) odd_[i].bytes = {};
  }
}

void Backward::tile_ranges(int64_t a, int64_t b, std::vector<int64_t>& s, std::vector<int64_t>& t) const {
  // For the input gradient rows [a, b): the rows [s[i], t[i]) of tensor i (i <= P) whose
  // gradient the tile needs (the rows op i's data-gradient conv reads, a fast one's rounded
  // out to whole tile blocks, then its pool, upwards).
  s.assign(P_ + 1, 0), t.assign(P_ + 1, 0);
  s[0] = a, t[0] = b;
  for (int i = 0; i < P_; ++i) {
    const int64_t pool = op(i).pool;
    int64_t lo, hi;
    e_.op_reads(i, s[i], t[i], lo, hi);
    s[i + 1] = std::max<int64_t>(0, lo) / pool;
    t[i + 1] = (std::min(L(i), hi) + pool - 1) / pool;
  }
}

int64_t Backward::backward_tiles() const {
  // The fewest tiles (a power of two) whose largest buffer fits the engine's tile size shared
  // by the threads (each works on a tile of its own).
  const int64_t L0 = L(0), budget = e_.tile_floats_ / threads_;
  if (e_.tile_floats_ <= 0) return 1;
  std::vector<int64_t> s, t;
  for (int64_t tiles = 1; tiles < L0; tiles *= 2) {
    tile_ranges(0, (L0 + tiles - 1) / tiles, s, t);
    const int64_t rows0 = t[0] - s[0] + 2 * e_.halo_[0];
    int64_t biggest = rows0 * std::max<int64_t>(C(1), int64_t(op(0).k) * 4);
    for (int i = 1; i < P_; ++i)
      biggest = std::max(biggest, (t[i] - s[i] + 2 * e_.halo_[i]) * std::max(C(i), C(i + 1)));
    if (biggest <= budget) return tiles;
  }
  return L0;
}

void Backward::tiled_backward(float* out) {
  // The tower and the stem, tile by tile over the input positions (see tile_backward).
  // The top ops whole while op i - 1's whole pre-pool gradient fits the engine's tile size (the
  // tower's deepest layers: few rows, the most weights, which tiles would each read again).
  // Op i's GELU' needs tensor i's raw rows whole (i >= 2), its routing op i - 1's choices.
  top_ = P_;
  top_pre_.release();
  const auto whole_rows = [&](int i, int64_t& lo, int64_t& hi) { e_.op_reads(i, 0, L(i), lo, hi); };
  if (P_ >= 2) {
    for (int i = P_ - 1; i >= 2 && e_.tile_floats_ > 0; --i) {
      int64_t lo, hi;
      whole_rows(i - 1, lo, hi);
      if ((hi - lo) * C(i) > e_.tile_floats_) break;
      top_ = i;
    }
    int64_t lo, hi;
    whole_rows(P_ - 1, lo, hi);
    top_pre_.alloc(pool_, lo, hi, C(P_));
    route(P_ - 1, grad_[P_].origin(), C(P_), op(P_ - 1).pool == 2 ? &odd_[P_ - 1] : nullptr, 0, L(P_ - 1), top_pre_,
          threads_);
    grad_[P_].release();
    for (int i = P_ - 1; i >= top_; --i) {  // each op's weights and tensors released after use
      whole_rows(i - 1, lo, hi);
      // the rows its data gradient reaches (plan_rows; empty: none)
      const int64_t s = nz_[i].first, t = std::max(s, nz_[i].second);
      Rows next = conv_down(i, transposed(i), top_pre_.origin(), s, t, lo, hi, raw_[i].origin(),
                            op(i - 1).pool == 2 ? &odd_[i - 1] : nullptr, threads_);
      top_pre_ = std::move(next);
      raw_[i].release(), raw_[i + 1].release();
      odd_[i].bytes = {};
    }
  }
  std::vector<Packed> w(top_);
  for (int i = 1; i < top_; ++i) w[i] = transposed(i);
  const Packed ws = stem_transposed();
  const int64_t L0 = L(0), tiles = backward_tiles();
  // Threads take whole tiles, one at a time from a shared counter (tiles outside the chosen
  // bins' reach take no time), each tile's steps single-threaded: one parallel section for
  // the tower instead of a few per layer and tile (each a wait for the slowest thread, long
  // on a busy machine). Tiles change no value: the result is the same for any count.
  const bool per_tile = threads_ > 1 && tiles > 1;
  const int team = per_tile ? threads_ : 1;
  std::atomic<int64_t> next{0};
  parallel_for(team, team, [&](int64_t, int64_t) {
    for (int64_t tile; (tile = next.fetch_add(1, std::memory_order_relaxed)) < tiles;)
      tile_backward(L0 * tile / tiles, L0 * (tile + 1) / tiles, w, ws, per_tile ? 1 : threads_, out);
  });
  top_pre_.release();
}

Rows Backward::conv_down(int i, const Packed& w, const float* pre, int64_t s, int64_t t, int64_t lo,
                                   int64_t hi, const float* x, const PoolChoice* choice, int threads) const {
  // Op i's data-gradient conv, tensor i's rows [s, t) from `pre` (op i's pre-pool output
  // gradient, position-origin), its epilogue writing op i - 1's pre-pool output gradient:
  // times GELU' of x (tensor i's raw rows, position-origin; GELU' itself where dgelu_only_[i])
  // where op i reads activated input, routed through op i - 1's max-pool choices (null: no
  // pool). The rows returned cover
  // [lo, hi) (what op i - 1's data-gradient conv reads), zero where the conv writes none.
  const OpDesc& o = op(i);
  const int pool = op(i - 1).pool;
  const int64_t w0 = s * pool, w1 = t * pool;  // the rows the epilogue writes
  Rows next;
  next.alloc(pool_, std::min(lo, w0), std::max(hi, w1), o.cin);
  next.zero_outside(w0, w1);
  cpu::Epilogue epi;
  epi.out = next.origin(), epi.out_stride = o.cin;
  if (o.gelu_in) epi.dgelu = x, epi.dgelu_stride = o.cin, epi.dgelu_ready = dgelu_only_[size_t(i)];
  if (choice) epi.unpool = choice->origin(), epi.unpool_stride = choice->stride;
  if (s < t) conv(w, o.k, o.dil, o.cout, o.cin, pre, o.cout, s, t, epi, threads);
  return next;
}

void Backward::tile_backward(int64_t A, int64_t B, const std::vector<Packed>& w, const Packed& ws, int threads,
                             float* out) const {
  // The input gradient rows [A, B): the tile takes the rows of grad_[P] it needs and carries
  // them down through the tower (recomputing the rows it shares with its neighbours),
  // recomputes the stem's output rows (for the first tower op's GELU' and the stem's pool)
  // and ends at the one-hot input. w: the tower's transposed weights, ws: the stem's.
  if (A == B) return;
  const int P = P_;
  const OpDesc& s0 = op(0);
  const int64_t L0 = L(0), h0 = e_.halo_[0];
  const int k0 = s0.k, c1 = C(1);
  std::vector<int64_t> s, t;
  tile_ranges(A, B, s, t);
  const auto pre_rows = [&](int i, int64_t& lo, int64_t& hi) {  // what op i's data-gradient conv reads
    if (i == 0) lo = A - h0, hi = B + h0;
    else e_.op_reads(i, s[i], t[i], lo, hi);
  };
  const int top = top_pre_.empty() ? P : top_;  // the tile starts at op top - 1's gradient
  {  // no gradient reaches this tile (outside the chosen bins' receptive field): zeros
    const float* g;
    int64_t n;
    if (top_pre_.empty()) {
      g = grad_[P].row(s[P]), n = (t[P] - s[P]) * C(P);
    } else {
      int64_t lo, hi;
      pre_rows(top - 1, lo, hi);
      lo = std::max(lo, top_pre_.lo), hi = std::min(hi, top_pre_.hi);
      g = top_pre_.row(lo), n = (hi - lo) * top_pre_.ch;
    }
    if (std::all_of(g, g + n, [](float v) { return v == 0.f; })) {
      std::fill(out + A * 4, out + B * 4, 0.f);
      return;
    }
  }
  // The stem's output rows [s[1], t[1]): the raw rows (GELU' of op 1) and its pool's choices.
  Rows x1;
  PoolChoice c0;
  {
    const int pool = s0.pool;
    x1.alloc(pool_, s[1], t[1], c1);
    if (pool == 2) c0.init(s[1], t[1], c1);
    e_.stem_call(code0_, n_uniform_, s[1] * pool, t[1] * pool, x1.origin(), nullptr, c1, threads,
                 pool == 2 ? c0.origin() : nullptr, c0.stride, bool(dgelu_only_[1]));
  }
  // pre: the gradient of op i's pre-pool output, the rows its data-gradient conv reads (the
  // stem's: [A - h0, B + h0)), zero beyond the tensor: op top - 1's from top_pre_ (or op
  // P - 1's from grad_[P], routed through its max-pool); below, each data-gradient conv's
  // epilogue writes the next op's.
  const auto choice = [&](int i) -> const PoolChoice* { return op(i).pool != 2 ? nullptr : i ? &odd_[i] : &c0; };
  Rows pre;
  const float* pre_origin = top_pre_.empty() ? nullptr : top_pre_.origin();
  if (!pre_origin) {
    int64_t lo, hi;
    pre_rows(P - 1, lo, hi);
    pre.alloc(pool_, lo, hi, op(P - 1).cout);
    route(P - 1, grad_[P].origin(), C(P), choice(P - 1), 0, L(P - 1), pre, threads);
    pre_origin = pre.origin();
  }
  for (int i = top - 1; i >= 1; --i) {
    int64_t lo, hi;
    pre_rows(i - 1, lo, hi);
    // The tile's rows where the gradient may be nonzero (both ranges whole tile blocks); the
    // others are zero, and tensor i's raw rows may not be kept there.
    int64_t a = std::max(s[i], nz_[i].first), b = std::min(t[i], nz_[i].second);
    if (a >= b) a = b = s[i];
    Rows next = conv_down(i, w[i], pre_origin, a, b, lo, hi, i == 1 ? x1.origin() : raw_[i].origin(),
                          choice(i - 1), threads);
    pre = std::move(next);
    pre_origin = pre.origin();
  }
  // The stem: a 1x1 conv of its pre-pool gradient rows to [k][4] per row, then each input
  // row sums its k taps and takes GELU' of its one-hot value.
  Rows u;
  const int64_t u0 = std::max<int64_t>(0, A - h0), u1 = std::min(L0, B + h0);
  u.alloc(pool_, u0, u1, k0 * 4);
  conv(ws, 1, 1, c1, k0 * 4, pre_origin, c1, u0, u1, u.origin(), k0 * 4, threads);
  pre.release();
  // gelu'(v) of the three values a one-hot entry takes: 0, 1 and 0.25
  const float g0 = float(gelu_grad(0.0, gelu_)), g1 = float(gelu_grad(1.0, gelu_)), gq = float(gelu_grad(0.25, gelu_));
  const int half = k0 / 2, dil = s0.dil;
  parallel_rows(A, B, threads, [&](int64_t q0, int64_t q1) {
    for (int64_t q = q0; q < q1; ++q) {
      float d[4] = {0.f, 0.f, 0.f, 0.f};
      for (int tap = 0; tap < k0; ++tap) {
        const int64_t p = q - int64_t(tap - half) * dil;  // the output row that read x[q] through this tap
        if (p < 0 || p >= L0) continue;
        const float* up = u.row(p) + tap * 4;
        for (int ch = 0; ch < 4; ++ch) d[ch] += up[ch];
      }
      const uint8_t code = code0_[q];
      const bool uniform = code == 5 || (code == 4 && n_uniform_);
      for (int ch = 0; ch < 4; ++ch) {
        const float gv = code < 4 ? (code == ch ? g1 : g0) : uniform ? gq : g0;
        out[q * 4 + ch] = gv * d[ch];
      }
    }
  });
}

void Backward::run(const uint8_t* codes, bool n_uniform, float* out) {
  const int64_t L0 = e_.seq_length_, sh = conv_halo(op(0).k, op(0).dil);
  padded_.assign(size_t(L0 + 2 * sh), cpu::kCodeOutside);
  for (int64_t q = 0; q < L0; ++q) {
    if (codes[q] > 5) fail("base code " + std::to_string(codes[q]) + " at position " + std::to_string(q) + " (expected 0..5)");
    padded_[size_t(sh + q)] = codes[q];
  }
  code0_ = padded_.data() + sh;
  n_uniform_ = n_uniform;
  plan_rows();
  record_forward();
  whole_backward();
  tiled_backward(out);
  raw_.clear(), act_.clear(), grad_.clear(), odd_.clear();
}

void Engine::gradient(const uint8_t* codes, int64_t batch, bool n_uniform, const HeadRequest& req,
                      const std::vector<int>& bins, float* out, const std::vector<KernelRef>& kernels) const {
  Backward bw(*this, req, bins, kernels);
  for (int64_t b = 0; b < batch; ++b) bw.run(codes + b * seq_length_, n_uniform, out + b * seq_length_ * 4);
}

}  // namespace b2f

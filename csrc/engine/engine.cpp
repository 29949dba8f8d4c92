#include "engine.h"

#include <algorithm>
#include <chrono>
#include <ctime>
#include <cstring>
#include <iterator>
#include <stdexcept>

namespace b2f {

namespace {
[[noreturn]] void fail(const std::string& msg) { throw std::invalid_argument(msg); }
}  // namespace

Engine::Engine(int64_t seq_length, Gelu gelu, bool final_gelu, std::vector<OpDesc> ops, int threads,
               const std::string& isa, int64_t tile_floats, bool head_bf16, const std::function<void(int)>& packed)
    : seq_length_(seq_length), gelu_(gelu), final_gelu_(final_gelu), threads_(std::max(1, threads)),
      tile_floats_(tile_floats), kernels_(&cpu::select_kernels(isa.c_str())), ops_(std::move(ops)),
      head_bf16_(head_bf16) {
  const int n = int(ops_.size());
  // Which forms of each tensor are read, with what halo, and when last (one fp32 form for
  // both kinds of pre-activation reader).
  TensorPlan plan = plan_tensors(seq_length, ops_, final_gelu_);
  lengths_ = std::move(plan.lengths), channels_ = std::move(plan.channels);
  need_act_ = std::move(plan.act), need_raw_ = std::move(plan.raw);
  for (int i = 0; i <= n; ++i) need_raw_[i] = need_raw_[i] || plan.residual[i];
  halo_ = std::move(plan.halo), last_use_ = std::move(plan.last_use);
  // Activated tensors are stored in the type of the op (or head) that reads them.
  if (head_bf16_ && !final_gelu_) fail("bf16 heads need the activated trunk output (final_gelu)");
  act_bf16_.assign(n + 1, 0);
  act_bf16_[n] = head_bf16_;
  // A fast conv with bf16 products reads fp32 and rounds its transformed inputs instead.
  for (int i = n - 1; i >= 1; --i)
    act_bf16_[i] = ops_[i].type == OpDesc::Conv ? (ops_[i].gelu_in && ops_[i].bf16 && !ops_[i].fast_m)
                                                : act_bf16_[i + 1];
  // The prefix run tile by tile: leading convs without residuals, whose tensors (but the
  // last, P) no later op reads and which are read in one form only.
  prefix_ = 0;
  while (prefix_ < n && ops_[prefix_].type == OpDesc::Conv && ops_[prefix_].residual < 0) ++prefix_;
  for (bool changed = true; changed;) {
    changed = false;
    for (int j = 0; j < n; ++j)
      if (ops_[j].residual >= 0 && ops_[j].residual < prefix_) prefix_ = ops_[j].residual, changed = true;
    for (int i = 1; i < prefix_; ++i)
      if (need_raw_[i] && need_act_[i]) prefix_ = i, changed = true;
  }
  if (ops_[0].gelu_in == false) fail("the stem must be pre-activated (GELU on the one-hot input)");
  if (ops_[0].k > 64) fail("the stem's kernel size must be at most 64");
  packed_.resize(n);
  for (int i = 1; i < n; ++i)
    if (ops_[i].type == OpDesc::Conv) {
      const OpDesc& op = ops_[i];
      if (op.fast_m) {
        packed_[i] = pack_fast(op.kernel, op.kernel_bf16, op.bias.data(), op.k, op.cin, op.cout, op.fast_m, op.bf16);
      } else {
        packed_[i] = pack(op.kernel, op.kernel_bf16, op.bias.data(), op.k, op.cin, op.cout, op.bf16);
      }
      if (packed) packed(i);
    }
  // The stem is a table gather (stem_table): only its bias is packed.
  packed_[0] = pack(nullptr, false, ops_[0].bias.data(), ops_[0].k, 4, ops_[0].cout, false);
  stem_kernel_.resize(size_t(ops_[0].k) * 4 * ops_[0].cout);
  for (size_t j = 0; j < stem_kernel_.size(); ++j) stem_kernel_[j] = weight_at(ops_[0].kernel, ops_[0].kernel_bf16, j);
  stem_tables_[0] = stem_table(false);
  stem_tables_[1] = stem_table(true);
  if (packed) packed(0);
  // The packed copies (and the stem's tables) are all the kernels read from now on.
  for (OpDesc& op : ops_) op.kernel = nullptr;
}

Engine::Packed Engine::pack(const void* kernel, bool kernel_bf16, const float* bias, int k, int cin, int cout,
                            bool bf16) const {
  // fp32: [k][cin][cout] -> [panel][k][cin][nr]: each micro-kernel step reads nr contiguous
  // weights. bf16: [panel][k][cin pairs][nr][2] (bf16_weight_index), rounded to nearest even.
  // The source is read in its own order (row by row), so a memory-mapped file is read
  // sequentially once.
  const int nr = kernels_->nr, panels = (cout + nr - 1) / nr;
  Packed p;
  p.bf16 = bf16;
  p.bias.assign(size_t(panels) * nr, 0.f);
  std::copy(bias, bias + cout, p.bias.begin());
  if (!kernel) return p;
  const float* kf = static_cast<const float*>(kernel);
  const uint16_t* kb = static_cast<const uint16_t*>(kernel);
  if (bf16) {
    p.wb.assign(size_t(panels) * k * ((cin + 1) / 2) * nr * 2, 0);
    for (int t = 0; t < k; ++t)
      for (int c = 0; c < cin; ++c) {
        const size_t row = (size_t(t) * cin + c) * cout;
        for (int o = 0; o < cout; ++o)
          p.wb[size_t(cpu::bf16_weight_index(nr, k, cin, o / nr, t, c, o % nr))] =
              kernel_bf16 ? kb[row + o] : cpu::f32_to_bf16(kf[row + o]);
      }
  } else {
    p.w.assign(size_t(panels) * k * cin * nr, 0.f);
    for (int t = 0; t < k; ++t)
      for (int c = 0; c < cin; ++c) {
        const size_t row = (size_t(t) * cin + c) * cout;
        for (int o = 0; o < cout; ++o)
          p.w[((size_t(o / nr) * k + t) * cin + c) * nr + o % nr] = kernel_bf16 ? cpu::bf16_to_f32(kb[row + o]) : kf[row + o];
      }
  }
  return p;
}

Engine::Packed Engine::pack_fast(const void* kernel, bool kernel_bf16, const float* bias, int k, int cin, int cout,
                                 int m, bool bf16) const {
  // The transformed weights U[j][c][o] = sum_t G[j][t] w[t][c][o], summed in float64,
  // packed as a conv with one tap per transform point.
  Winograd wg = make_winograd(m, k);
  std::vector<float> u(size_t(wg.n) * cin * cout);
  std::vector<double> acc(static_cast<size_t>(cout));
  for (int j = 0; j < wg.n; ++j)
    for (int c = 0; c < cin; ++c) {
      std::fill(acc.begin(), acc.end(), 0.0);
      for (int t = 0; t < k; ++t) {
        const double g = wg.g[size_t(j) * k + t];
        if (g == 0.0) continue;
        const size_t row = (size_t(t) * cin + c) * cout;
        for (int o = 0; o < cout; ++o) acc[o] += g * weight_at(kernel, kernel_bf16, row + o);
      }
      std::copy(acc.begin(), acc.end(), u.begin() + (size_t(j) * cin + c) * cout);
    }
  Packed p = pack(u.data(), false, bias, wg.n, cin, cout, bf16);
  p.wino = std::move(wg);
  return p;
}

int64_t Engine::weight_bytes() const {
  int64_t b = 0;
  const auto add = [&](const Packed& p) { b += int64_t(p.w.size() * 4 + p.wb.size() * 2 + p.bias.size() * 4); };
  for (const Packed& p : packed_) add(p);
  for (const Head& h : heads_) add(h.all);
  for (const auto& t : stem_tables_) b += int64_t(t.size() * 4);
  return b;
}

std::vector<float> Engine::stem_table(bool n_uniform) const {
  const OpDesc& op = ops_[0];
  const int nr = kernels_->nr, padded = ((op.cout + nr - 1) / nr) * nr;
  return b2f::stem_table(op.kernel, op.kernel_bf16, op.k, op.cout, padded, gelu_, n_uniform);
}

int Engine::add_head(const void* weight, bool weight_bf16, const float* bias, int channels, int tracks, OutAct act) {
  if (channels != trunk_channels()) fail("head expects " + std::to_string(channels) + " channels, the trunk gives " +
                                         std::to_string(trunk_channels()));
  Head h;
  h.all = pack(weight, weight_bf16, bias, 1, channels, tracks, head_bf16_);
  h.channels = channels, h.tracks = tracks, h.act = act;
  heads_.push_back(std::move(h));
  return int(heads_.size()) - 1;
}

const Engine::Packed& Engine::head_panel(const HeadRequest& r) const {
  // Only the requested tracks' columns are packed, so the GEMM computes only those.
  const Head& h = heads_.at(r.head);
  if (r.tracks.empty()) return h.all;
  std::lock_guard<ForkSafeMutex> lock(cache_mutex_);
  auto key = std::make_pair(r.head, r.tracks);
  auto it = head_cache_.find(key);
  if (it != head_cache_.end()) return *it->second;
  const int nr = kernels_->nr, n = int(r.tracks.size()), panels = (n + nr - 1) / nr;
  auto p = std::make_unique<Packed>();
  p->bf16 = h.all.bf16;
  if (p->bf16) p->wb.assign(size_t(panels) * ((h.channels + 1) / 2) * nr * 2, 0);
  else p->w.assign(size_t(panels) * h.channels * nr, 0.f);
  p->bias.assign(size_t(panels) * nr, 0.f);
  for (int j = 0; j < n; ++j) {
    const int col = r.tracks[j];
    if (col < 0 || col >= h.tracks) fail("track index " + std::to_string(col) + " out of range");
    if (p->bf16) {
      for (int c = 0; c < h.channels; ++c)
        p->wb[size_t(cpu::bf16_weight_index(nr, 1, h.channels, j / nr, 0, c, j % nr))] =
            h.all.wb[size_t(cpu::bf16_weight_index(nr, 1, h.channels, col / nr, 0, c, col % nr))];
    } else {
      // Column col of the full packing: panel col / nr, lane col % nr (k = 1: [panel][cin][nr]).
      const float* src = h.all.w.data() + size_t(col / nr) * h.channels * nr + col % nr;
      float* dst = p->w.data() + size_t(j / nr) * h.channels * nr + j % nr;
      for (int c = 0; c < h.channels; ++c) dst[size_t(c) * nr] = src[size_t(c) * nr];
    }
    p->bias[j] = h.all.bias[col];
  }
  if (head_cache_.size() > 16) head_cache_.clear();  // bound memory for many distinct selections
  return *(head_cache_[key] = std::move(p));
}

void Engine::stem_call(const uint8_t* codes, bool n_uniform, int64_t p0, int64_t p1, float* out_raw, void* out_act,
                      int64_t stride, int threads, uint8_t* choice, int64_t choice_stride, bool out_dgelu) const {
  const OpDesc& s = ops_[0];
  cpu::StemArgs sa;
  sa.codes = codes;
  sa.table = stem_tables_[n_uniform ? 1 : 0].data();
  sa.k = s.k, sa.dil = s.dil, sa.cout = s.cout, sa.p0 = p0, sa.p1 = p1, sa.threads = threads ? threads : threads_;
  sa.epi.bias = packed_[0].bias.data();
  sa.epi.pool = s.pool;
  sa.epi.choice = choice, sa.epi.choice_stride = choice_stride;
  sa.epi.gelu = gelu_;
  sa.epi.out = out_raw, sa.epi.out_stride = stride, sa.epi.out_dgelu = out_dgelu;
  sa.epi.act = out_act, sa.epi.act_stride = stride, sa.epi.act_bf16 = act_bf16_[1];
  kernels_->stem(sa);
}

void Engine::conv_call(int i, const void* in, const float* res, int64_t p0, int64_t p1, float* out_raw,
                       void* out_act, int threads, uint8_t* choice, int64_t choice_stride, bool out_dgelu) const {
  const OpDesc& op = ops_[i];
  cpu::ConvArgs a;
  a.in = in;
  a.in_stride = op.cin;
  packed_[i].feed(a);
  a.in_bf16 = op.gelu_in && act_bf16_[i];
  a.k = op.k, a.dil = op.dil, a.cin = op.cin, a.cout = op.cout;
  a.p0 = p0, a.p1 = p1, a.threads = threads ? threads : threads_;
  a.epi.pool = op.pool;
  a.epi.choice = choice, a.epi.choice_stride = choice_stride;
  a.epi.gelu = gelu_;
  a.epi.res = res, a.epi.res_stride = op.cout;
  a.epi.out = out_raw, a.epi.out_stride = op.cout, a.epi.out_dgelu = out_dgelu;
  a.epi.act = out_act, a.epi.act_stride = op.cout, a.epi.act_bf16 = act_bf16_[i + 1];
  kernels_->conv(a);
}

int64_t Engine::prefix_tiles() const {
  // The fewest tiles (a power of two) whose largest intermediate buffer fits tile_floats_.
  if (prefix_ < 2 || tile_floats_ <= 0) return 1;
  const int64_t lp = lengths_[prefix_];
  for (int64_t tiles = 1; tiles < lp; tiles *= 2) {
    std::vector<int64_t> lo, hi, need_lo, need_hi;
    prefix_ranges(0, (lp + tiles - 1) / tiles, lo, hi, need_lo, need_hi);
    int64_t biggest = 0;
    for (int i = 1; i < prefix_; ++i)
      biggest = std::max(biggest, (need_hi[i] - need_lo[i]) * channels_[i] * prefix_es(i) / 4);
    if (biggest <= tile_floats_) return tiles;
  }
  return lp;
}

void Engine::prefix_ranges(int64_t a, int64_t b, std::vector<int64_t>& lo, std::vector<int64_t>& hi,
                           std::vector<int64_t>& need_lo, std::vector<int64_t>& need_hi) const {
  // Backwards from rows [a, b) of tensor P: op i must produce rows [lo[i+1], hi[i+1]) of
  // its output, so it reads rows [need_lo[i], need_hi[i]) of its input (halo included,
  // possibly beyond the sequence), of which [lo[i], hi[i]) lie inside and are computed.
  const int P = prefix_;
  lo.assign(P + 1, 0), hi.assign(P + 1, 0), need_lo.assign(P + 1, 0), need_hi.assign(P + 1, 0);
  lo[P] = a, hi[P] = b;
  for (int i = P - 1; i >= 0; --i) {
    op_reads(i, lo[i + 1] * ops_[i].pool, hi[i + 1] * ops_[i].pool, need_lo[i], need_hi[i]);
    lo[i] = std::max<int64_t>(0, need_lo[i]);
    hi[i] = std::min(lengths_[i], need_hi[i]);
  }
}

namespace {
double process_cpu_seconds() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

// Runs f(), adding its wall seconds to (*seconds)[i] and the CPU seconds of every thread of
// the process to (*seconds)[size / 2 + i] when seconds is given.
template <typename F>
void timed(std::vector<double>* seconds, int i, F&& f) {
  if (!seconds) return f();
  const auto t0 = std::chrono::steady_clock::now();
  const double c0 = process_cpu_seconds();
  f();
  (*seconds)[i] += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  (*seconds)[seconds->size() / 2 + i] += process_cpu_seconds() - c0;
}
}  // namespace

void Engine::run_prefix_tiled(const uint8_t* codes, bool n_uniform, int64_t tiles, float* out_raw, void* out_act,
                              std::vector<double>* seconds) const {
  // Stem and tower tile by tile along the sequence: no full-resolution activation is ever
  // held, only one tile of each (plus halos, recomputed at tile edges: a few percent).
  const int P = prefix_;
  const int64_t lp = lengths_[P];
  std::vector<int64_t> lo, hi, need_lo, need_hi;
  std::vector<Tensor> buf(P);
  for (int64_t t = 0; t < tiles; ++t) {
    const int64_t a = lp * t / tiles, b = lp * (t + 1) / tiles;
    if (a == b) continue;
    prefix_ranges(a, b, lo, hi, need_lo, need_hi);
    // origin[i]: position-origin pointer of tensor i's tile (the form op i reads). Each is
    // taken from the pool just before the op that writes it and returned right after the op
    // that reads it, so at most two tiles are held at a time.
    std::vector<char*> origin(P + 1, nullptr);
    const auto alloc = [&](int i) {
      const int64_t row = int64_t(channels_[i]) * prefix_es(i);  // bytes
      buf[i].alloc(pool_, need_hi[i] - need_lo[i], 0, channels_[i], prefix_es(i));
      origin[i] = buf[i].bytes() - need_lo[i] * row;
      // Rows outside the sequence are the zero padding; the rest is computed below.
      std::memset(buf[i].bytes(), 0, size_t((lo[i] - need_lo[i]) * row));
      std::memset(origin[i] + hi[i] * row, 0, size_t((need_hi[i] - hi[i]) * row));
    };
    const auto outputs = [&](int i, float*& r, void*& ac) {
      // Op i writes tensor i + 1 in the form op i + 1 reads, or the full tensor P.
      r = nullptr, ac = nullptr;
      if (i + 1 == P) {
        r = out_raw, ac = out_act;
      } else if (ops_[i + 1].gelu_in) {
        ac = origin[i + 1];
      } else {
        r = reinterpret_cast<float*>(origin[i + 1]);
      }
    };
    float* r;
    void* ac;
    if (P > 1) alloc(1);
    outputs(0, r, ac);
    timed(seconds, 0, [&] { stem_call(codes, n_uniform, lo[1] * ops_[0].pool, hi[1] * ops_[0].pool, r, ac, channels_[1]); });
    for (int i = 1; i < P; ++i) {
      if (i + 1 < P) alloc(i + 1);
      outputs(i, r, ac);
      timed(seconds, i, [&] { conv_call(i, origin[i], nullptr, lo[i + 1] * ops_[i].pool, hi[i + 1] * ops_[i].pool, r, ac); });
      buf[i].release();
    }
  }
}

void Engine::run_trunk(const uint8_t* codes, bool n_uniform, Tensor& trunk_out, TrunkCache* keep,
                       std::vector<double>* seconds) const {
  const int n = int(ops_.size());
  std::vector<Tensor> raw(n + 1), act(n + 1);
  const auto ensure = [&](int i) {
    if (need_raw_[i] && raw[i].empty()) raw[i].alloc(pool_, lengths_[i], halo_[i], channels_[i]);
    if (need_act_[i] && act[i].empty()) act[i].alloc(pool_, lengths_[i], halo_[i], channels_[i], act_es(i));
  };
  const auto row0 = [](Tensor& t) { return t.empty() ? nullptr : reinterpret_cast<float*>(t.row0()); };
  const auto row0v = [](Tensor& t) { return t.empty() ? nullptr : static_cast<void*>(t.row0()); };
  // Stem input: codes with kCodeOutside beyond both ends as the zero padding.
  const int64_t sh = conv_halo(ops_[0].k, ops_[0].dil);
  std::vector<uint8_t> padded(size_t(seq_length_ + 2 * sh), cpu::kCodeOutside);
  for (int64_t q = 0; q < seq_length_; ++q) {
    if (codes[q] > 5) fail("base code " + std::to_string(codes[q]) + " at position " + std::to_string(q) + " (expected 0..5)");
    padded[sh + q] = codes[q];
  }
  const uint8_t* code0 = padded.data() + sh;

  int first = 1;  // the first op still to run after the stem (or the tiled prefix)
  const int64_t tiles = keep ? 1 : prefix_tiles();  // a cache keeps every tensor whole
  if (tiles > 1) {
    ensure(prefix_);
    run_prefix_tiled(code0, n_uniform, tiles, row0(raw[prefix_]), row0v(act[prefix_]), seconds);
    first = prefix_;
  } else {
    ensure(1);
    timed(seconds, 0, [&] { stem_call(code0, n_uniform, 0, seq_length_, row0(raw[1]), row0v(act[1]), channels_[1]); });
  }
  for (int i = first; i < n; ++i) {
    const OpDesc& op = ops_[i];
    ensure(i + 1);
    timed(seconds, i, [&] {
      if (op.type == OpDesc::Crop) {
        for (auto* t : {&raw, &act})
          if (!(*t)[i + 1].empty()) {
            const int64_t row = int64_t(channels_[i]) * (*t)[i].esize;  // bytes
            std::memcpy((*t)[i + 1].row0(), (*t)[i].row0() + op.left * row, size_t(lengths_[i + 1] * row));
          }
      } else {
        conv_call(i, (op.gelu_in ? act[i] : raw[i]).row0(), op.residual >= 0 ? row0(raw[op.residual]) : nullptr, 0,
                  lengths_[i], row0(raw[i + 1]), row0v(act[i + 1]));
      }
    });
    if (!keep)
      for (int j = 0; j <= i; ++j)
        if (last_use_[j] == i) raw[j].release(), act[j].release();
  }
  Tensor& t = final_gelu_ ? act[n] : raw[n];
  if (keep) {  // the cache keeps every tensor, the trunk output among them
    keep->padded.assign(padded.begin(), padded.end());
    keep->n_uniform = n_uniform;
    keep->trunk_out = t.row0();
    keep->raw = std::move(raw);
    keep->act = std::move(act);
  } else {
    trunk_out.take(t);
  }
}

void Engine::op_range(int i, const float* x, int64_t x0, int64_t x_rows, const float* res, int64_t p0, int64_t p1,
                      float* out, bool activated) const {
  if (i < 1 || i >= int(ops_.size()) || ops_[i].type != OpDesc::Conv) fail("op_range: op " + std::to_string(i) +
                                                                           " is not a convolution after the stem");
  const OpDesc& op = ops_[i];
  const int64_t L = lengths_[i];
  if (p0 < 0 || p1 > L || p0 >= p1 || (op.pool == 2 && (p0 % 2 || p1 % 2)))
    fail("op_range: bad output range [" + std::to_string(p0) + ", " + std::to_string(p1) + ")");
  int64_t r0, r1;  // the rows the op reads, of which those inside the layer must be given
  op_reads(i, p0, p1, r0, r1);
  const int64_t need0 = std::max<int64_t>(0, r0), need1 = std::min(L, r1);
  if (x0 > need0 || x0 + x_rows < need1)
    fail("op_range: the input rows do not cover the range plus its halo (rows [" + std::to_string(need0) + ", " +
         std::to_string(need1) + ") are read)");
  if (op.residual >= 0 && !res) fail("op_range: this op needs its residual rows");
  // Activated input rows [r0, r1), zero outside the layer ("same" padding), in the op's
  // input type.
  const int c = op.cin;
  std::vector<float> buf(size_t(r1 - r0) * c, 0.f);
  const bool in16 = op.gelu_in && act_bf16_[i];  // a bf16 op's input, but a fast one's (conv_call)
  std::vector<uint16_t> buf16(in16 ? buf.size() : 0, 0);
  for (int64_t q = need0; q < need1; ++q) {
    const float* src = x + (q - x0) * c;
    const size_t d = size_t(q - r0) * c;
    for (int j = 0; j < c; ++j) buf[d + j] = op.gelu_in && !activated ? gelu(src[j], gelu_) : src[j];
    if (in16)
      for (int j = 0; j < c; ++j) buf16[d + j] = cpu::f32_to_bf16(buf[d + j]);
  }
  const void* in0 = in16 ? static_cast<const void*>(buf16.data() - r0 * c) : buf.data() - r0 * c;
  conv_call(i, in0, res ? res - p0 * op.cout : nullptr, p0, p1, out - (p0 / op.pool) * op.cout, nullptr);
}

void Engine::op_reads(int i, int64_t p0, int64_t p1, int64_t& lo, int64_t& hi) const {
  const OpDesc& op = ops_.at(i);
  if (op.type != OpDesc::Conv) fail("op " + std::to_string(i) + " is not a convolution");
  conv_reads(p0, p1, fast_block(op.fast_m, op.dil), conv_halo(op.k, op.dil), lo, hi);
}

void Engine::op_reached(int i, int64_t lo, int64_t hi, int64_t& o0, int64_t& o1) const {
  const OpDesc& op = ops_.at(i);
  if (op.type != OpDesc::Conv) fail("op " + std::to_string(i) + " is not a convolution");
  conv_reached(lo, hi, fast_block(op.fast_m, op.dil), conv_halo(op.k, op.dil), lengths_[i], o0, o1);
}

std::string Engine::op_algorithm(int i) const {
  const OpDesc& op = ops_.at(i);
  if (op.type == OpDesc::Crop) return "crop";
  if (i == 0) return "stem";
  if (op.fast_m) return "F(" + std::to_string(op.fast_m) + "," + std::to_string(op.k) + ")";
  return "direct";
}

int64_t Engine::op_flops(int i, int64_t p0, int64_t p1, bool nominal) const {
  const OpDesc& op = ops_.at(i);
  if (op.type != OpDesc::Conv || p1 <= p0) return 0;
  if (nominal || (i > 0 && !op.fast_m)) return 2 * int64_t(op.k) * op.cin * op.cout * (p1 - p0);
  if (i == 0) return int64_t(op.k) * op.cout * (p1 - p0);  // run_stem: k table rows summed
  const Winograd& wg = packed_[i].wino;
  const int64_t blk = fast_block(op.fast_m, op.dil);
  const int64_t tiles = (ceil_to(p1, blk) - floor_to(p0, blk)) / blk * op.dil;
  const auto nnz = [](const std::vector<float>& v) { return int64_t(std::count_if(v.begin(), v.end(), [](float x) { return x != 0.f; })); };
  // (the output transform runs every coefficient: its zeros cost nothing extra in vectors)
  return tiles * (2 * int64_t(wg.n) * op.cin * op.cout + 2 * nnz(wg.bt) * op.cin + 2 * int64_t(wg.at.size()) * op.cout);
}

std::vector<int64_t> Engine::pass_flops() const {
  const int n = int(ops_.size());
  std::vector<int64_t> f(n, 0);
  int first = 0;
  const int64_t tiles = prefix_tiles();
  if (tiles > 1) {  // the ranges run_prefix_tiled computes, tile by tile
    const int P = prefix_;
    const int64_t lp = lengths_[P];
    std::vector<int64_t> lo, hi, need_lo, need_hi;
    for (int64_t t = 0; t < tiles; ++t) {
      const int64_t a = lp * t / tiles, b = lp * (t + 1) / tiles;
      if (a == b) continue;
      prefix_ranges(a, b, lo, hi, need_lo, need_hi);
      for (int i = 0; i < P; ++i) f[i] += op_flops(i, lo[i + 1] * ops_[i].pool, hi[i + 1] * ops_[i].pool);
    }
    first = P;
  }
  for (int i = first; i < n; ++i) f[i] = op_flops(i, 0, lengths_[i]);
  return f;
}

int64_t Engine::head_flops(int h, int tracks, int64_t rows) const {
  return 2 * int64_t(heads_.at(h).channels) * tracks * rows;
}

std::vector<double> Engine::profile(const uint8_t* codes, bool n_uniform, const std::vector<HeadRequest>& reqs) const {
  const int n = int(ops_.size());
  std::vector<double> seconds(2 * (n + 1), 0.0);
  Tensor t;
  run_trunk(codes, n_uniform, t, nullptr, &seconds);
  std::vector<float> out;
  for (const auto& r : reqs) {
    if (r.head < 0 || r.head >= n_heads()) fail("no head " + std::to_string(r.head));
    const Packed& panel = head_panel(r);
    out.resize(size_t(n_bins()) * (r.tracks.empty() ? heads_[r.head].tracks : r.tracks.size()));
    timed(&seconds, n, [&] { run_head(t.row0(), n_bins(), r, panel, out.data()); });
  }
  return seconds;
}

void Engine::trunk(const uint8_t* codes, int64_t batch, bool n_uniform, float* out) const {
  Tensor t;
  const size_t per = size_t(n_bins()) * trunk_channels();
  for (int64_t b = 0; b < batch; ++b) {
    t.release();
    run_trunk(codes + b * seq_length_, n_uniform, t);
    if (t.esize == 2) {  // the activated trunk output was stored as bf16 for the heads
      const uint16_t* h = reinterpret_cast<const uint16_t*>(t.row0());
      for (size_t j = 0; j < per; ++j) out[b * per + j] = cpu::bf16_to_f32(h[j]);
    } else {
      std::memcpy(out + b * per, t.row0(), per * sizeof(float));
    }
  }
}

void Engine::predict(const uint8_t* codes, int64_t batch, bool n_uniform, const std::vector<HeadRequest>& reqs,
                     const std::vector<float*>& outs) const {
  if (reqs.size() != outs.size()) fail("one output buffer per head request");
  std::vector<const Packed*> panels;
  for (const auto& r : reqs) {
    if (r.head < 0 || r.head >= n_heads()) fail("no head " + std::to_string(r.head));
    panels.push_back(&head_panel(r));
  }
  Tensor t;
  for (int64_t b = 0; b < batch; ++b) {
    t.release();  // back to the pool before this sequence's tensors are taken from it
    run_trunk(codes + b * seq_length_, n_uniform, t);
    for (size_t r = 0; r < reqs.size(); ++r) {
      const int tracks = reqs[r].tracks.empty() ? heads_[reqs[r].head].tracks : int(reqs[r].tracks.size());
      run_head(t.row0(), n_bins(), reqs[r], *panels[r], outs[r] + b * n_bins() * tracks);
    }
  }
}

}  // namespace b2f

// Single-base substitutions of a cached sequence: recompute only the receptive-field cone.
//
// After the REF pass every tensor is kept (TrunkCache). A substitution at position q changes
// the stem output only within the stem's halo of q; each later conv widens the changed range
// by its halo (and a pool halves it), a crop shifts it. Each op is run by the same kernels on
// just that range, reading the cached REF rows around it with the changed rows patched in,
// so the result equals a full forward pass of the mutated sequence bit for bit: every output
// row is computed by the same instructions from the same inputs.
#include <algorithm>
#include <atomic>
#include <cstring>
#include <stdexcept>

#include "basenji2_fast/parallel.h"
#include "engine.h"

namespace b2f {

namespace {
[[noreturn]] void fail(const std::string& msg) { throw std::invalid_argument(msg); }

// Rows [lo, hi) of one tensor that differ from the cached REF pass, in the forms kept.
// raw: fp32 [hi - lo][channels]; act: [hi - lo][channels] in the tensor's activated type
// (bf16 pairs in the floats' bytes when it is bf16). Empty when the form is not kept.
struct Patch {
  int64_t lo = 0, hi = 0;
  std::vector<float> raw, act;
  char* act_bytes() { return reinterpret_cast<char*>(act.data()); }
};

// Floats that hold n elements of es bytes.
size_t floats_for(int64_t n, int es) { return size_t((n * es + 3) / 4); }
}  // namespace

std::unique_ptr<Engine::TrunkCache> Engine::cache_trunk(const uint8_t* codes, bool n_uniform) const {
  auto c = std::make_unique<TrunkCache>();
  Tensor unused;
  run_trunk(codes, n_uniform, unused, c.get());
  return c;
}

void Engine::run_head(const void* trunk, int64_t rows, const HeadRequest& r, const Packed& panel, float* out,
                      int threads) const {
  const Head& h = heads_[r.head];
  const int tracks = r.tracks.empty() ? h.tracks : int(r.tracks.size());
  cpu::ConvArgs a;
  a.in = trunk, a.in_stride = trunk_channels();
  panel.feed(a);
  a.k = 1, a.dil = 1, a.cin = trunk_channels(), a.cout = tracks;
  a.p0 = 0, a.p1 = rows, a.threads = threads ? threads : threads_;
  a.epi.out = out, a.epi.out_stride = tracks;
  a.epi.out_act = h.act;
  kernels_->conv(a);
}

void Engine::predict_substitutions(const TrunkCache& c, const int64_t* pos, const uint8_t* alt, int64_t n,
                                   const std::vector<HeadRequest>& reqs, const std::vector<float*>& ref_outs,
                                   const std::vector<float*>& alt_outs, bool ref_ready) const {
  const int nops = int(ops_.size());
  const int64_t sh = conv_halo(ops_[0].k, ops_[0].dil);
  std::vector<const Packed*> panels;
  for (const auto& r : reqs) panels.push_back(&head_panel(r));
  const int64_t bins = n_bins();
  if (!ref_ready)
    for (size_t r = 0; r < reqs.size(); ++r) run_head(c.trunk_out, bins, reqs[r], *panels[r], ref_outs[r]);

  // A tensor's rows as the network sees them after the substitution: cached REF rows with
  // the patch over them, zeros outside the tensor. Writes rows [a, b) into dst (bytes, in
  // the form's type).
  const auto gather = [&](int i, bool act_form, const Patch& p, int64_t a, int64_t b, char* dst) {
    const Tensor& t = act_form ? c.act[i] : c.raw[i];
    const size_t row = size_t(channels_[i]) * t.esize;  // bytes
    const char* src = t.row0();
    const char* pv = reinterpret_cast<const char*>((act_form ? p.act : p.raw).data());
    for (int64_t q = a; q < b; ++q) {
      char* d = dst + (q - a) * row;
      if (q < 0 || q >= lengths_[i]) std::memset(d, 0, row);
      else if (q >= p.lo && q < p.hi) std::memcpy(d, pv + (q - p.lo) * row, row);
      else std::memcpy(d, src + q * row, row);
    }
  };

  // One substitution: patches through every layer, then the head on the changed bins.
  // With several mutations the threads take whole mutations (each kernel call single-
  // threaded), which keeps both cores busy without a fork and join per layer; a single
  // mutation's kernels use all threads.
  const bool per_mutation = threads_ > 1 && n > 1;
  const int kt = per_mutation ? 1 : 0;  // kernel threads (0 = the engine's)
  const auto substitute = [&](int64_t j, std::vector<Patch>& patch, std::vector<uint8_t>& codes,
                              std::vector<float>& in_buf, std::vector<float>& res_buf) {
    const int64_t pos_j = pos[j];
    const uint8_t alt_j = alt[j];
    const int64_t q = pos_j;
    // Stem over the pre-pool positions whose taps see q, widened to whole pool pairs.
    const int pool0 = ops_[0].pool;
    int64_t p0 = std::max<int64_t>(0, q - sh), p1 = std::min(seq_length_, q + sh + 1);
    p0 = p0 / pool0 * pool0, p1 = std::min(lengths_[0], (p1 + pool0 - 1) / pool0 * pool0);
    codes[sh + q] = alt_j;
    {
      Patch& out = patch[1];
      out.lo = p0 / pool0, out.hi = p1 / pool0;
      const int ch = channels_[1];
      out.raw.assign(need_raw_[1] ? size_t((out.hi - out.lo) * ch) : 0, 0.f);
      out.act.assign(need_act_[1] ? floats_for((out.hi - out.lo) * ch, act_es(1)) : 0, 0.f);
      stem_call(codes.data() + sh, c.n_uniform, p0, p1, need_raw_[1] ? out.raw.data() - out.lo * ch : nullptr,
                need_act_[1] ? out.act_bytes() - out.lo * ch * act_es(1) : nullptr, ch, kt);
    }
    codes[sh + q] = c.padded[sh + q];

    for (int i = 1; i < nops; ++i) {
      const OpDesc& op = ops_[i];
      const Patch& in = patch[i];
      Patch& out = patch[i + 1];
      const int ch_out = channels_[i + 1];
      if (op.type == OpDesc::Crop) {
        out.lo = std::max<int64_t>(0, in.lo - op.left), out.hi = std::min(lengths_[i + 1], in.hi - op.left);
        if (out.hi <= out.lo) out.lo = out.hi = 0;  // the change lies wholly in the cropped edge
        const int64_t skip = (out.lo + op.left - in.lo) * ch_out, len = (out.hi - out.lo) * ch_out;
        const int es = act_es(i + 1);  // a crop passes its input's types on
        out.raw.assign(in.raw.empty() ? 0 : size_t(len), 0.f);
        out.act.assign(in.act.empty() ? 0 : floats_for(len, es), 0.f);
        if (len > 0) {
          if (!in.raw.empty()) std::copy(in.raw.begin() + skip, in.raw.begin() + skip + len, out.raw.begin());
          if (!in.act.empty())
            std::memcpy(out.act_bytes(), reinterpret_cast<const char*>(in.act.data()) + skip * es, size_t(len * es));
        }
        continue;
      }
      const bool res_changed = op.residual >= 0 && patch[op.residual].hi > patch[op.residual].lo;
      if (in.hi <= in.lo && !res_changed) {  // nothing reaches this op any more
        out.lo = out.hi = 0, out.raw.clear(), out.act.clear();
        continue;
      }
      // Outputs whose computation reads the changed input rows (for a fast conv, whole tile
      // blocks: every output of a block reads all of the block's inputs), widened to whole
      // pool groups.
      int64_t o0 = 0, o1 = 0;
      if (in.hi > in.lo) op_reached(i, in.lo, in.hi, o0, o1);
      else o0 = lengths_[i], o1 = 0;
      if (res_changed) {  // the residual's own changed rows change these outputs too
        o0 = std::min(o0, patch[op.residual].lo), o1 = std::max(o1, patch[op.residual].hi);
      }
      o0 = o0 / op.pool * op.pool, o1 = std::min(lengths_[i], (o1 + op.pool - 1) / op.pool * op.pool);
      const int cin = op.cin;
      const int in_es = op.gelu_in ? act_es(i) : 4;
      int64_t r0, r1;  // the input rows the op reads for them
      op_reads(i, o0, o1, r0, r1);
      in_buf.resize(floats_for((r1 - r0) * cin, in_es));
      char* in_bytes = reinterpret_cast<char*>(in_buf.data());
      gather(i, op.gelu_in, in, r0, r1, in_bytes);
      const float* res = nullptr;
      if (op.residual >= 0) {
        res_buf.resize(size_t((o1 - o0) * op.cout));
        gather(op.residual, false, patch[op.residual], o0, o1, reinterpret_cast<char*>(res_buf.data()));
        res = res_buf.data() - o0 * op.cout;
      }
      out.lo = o0 / op.pool, out.hi = o1 / op.pool;
      const int out_es = act_es(i + 1);
      out.raw.assign(need_raw_[i + 1] ? size_t((out.hi - out.lo) * ch_out) : 0, 0.f);
      out.act.assign(need_act_[i + 1] ? floats_for((out.hi - out.lo) * ch_out, out_es) : 0, 0.f);
      conv_call(i, in_bytes - r0 * cin * in_es, res, o0, o1,
                out.raw.empty() ? nullptr : out.raw.data() - out.lo * ch_out,
                out.act.empty() ? nullptr : out.act_bytes() - out.lo * ch_out * out_es, kt);
    }

  };

  const auto tracks_of = [&](size_t r) {
    return int64_t(reqs[r].tracks.empty() ? heads_[reqs[r].head].tracks : int(reqs[r].tracks.size()));
  };
  // A mutation's bins outside its cone are REF's: copied by the thread that computed its trunk
  // cone, so that the copies (and the first touch of fresh output pages, which the kernel
  // zeroes: a fifth of the time per mutation when one thread did them) run on every core.
  const auto copy_ref = [&](int64_t j, const Patch& t) {
    for (size_t r = 0; r < reqs.size(); ++r) {
      const int64_t tracks = tracks_of(r);
      float* dst = alt_outs[r] + j * bins * tracks;
      const float* ref = ref_outs[r];
      std::copy(ref, ref + t.lo * tracks, dst);
      std::copy(ref + t.hi * tracks, ref + bins * tracks, dst + t.hi * tracks);
    }
  };
  // The heads over the changed bins only. Run with all threads, one mutation after another:
  // the threads share each head's weight panels (tens of MB for all tracks), which
  // per-mutation threads would each stream from memory.
  const auto heads = [&](int64_t j, const Patch& t) {
    const std::vector<float>& rows = final_gelu_ ? t.act : t.raw;
    for (size_t r = 0; r < reqs.size(); ++r)
      if (t.hi > t.lo)
        run_head(rows.data(), t.hi - t.lo, reqs[r], *panels[r], alt_outs[r] + (j * bins + t.lo) * tracks_of(r));
  };

  for (int64_t j = 0; j < n; ++j) {
    if (pos[j] < 0 || pos[j] >= seq_length_)
      fail("substitution position " + std::to_string(pos[j]) + " outside the sequence");
    if (alt[j] > 5) fail("base code " + std::to_string(alt[j]) + " (expected 0..5)");
  }
  // In groups of mutations: their trunk cones with one task per thread, each with its own
  // buffers, taking mutations one at a time from a shared counter (their cones differ in
  // size), keeping each one's changed trunk output rows; then their heads. Each mutation's
  // outputs are its own, so which thread computes it does not change a bit.
  const int team = per_mutation ? threads_ : 1;
  const int64_t group = 4 * int64_t(team);
  std::vector<Patch> trunk_rows(size_t(std::min<int64_t>(group, std::max<int64_t>(n, 1))));
  for (int64_t g0 = 0; g0 < n; g0 += group) {
    const int64_t g1 = std::min(n, g0 + group);
    std::atomic<int64_t> next{g0};
    parallel_for(team, team, [&](int64_t, int64_t) {
      std::vector<Patch> patch(nops + 1);
      std::vector<uint8_t> codes(c.padded);
      std::vector<float> in_buf, res_buf;
      for (int64_t j; (j = next.fetch_add(1, std::memory_order_relaxed)) < g1;) {
        substitute(j, patch, codes, in_buf, res_buf);
        copy_ref(j, patch[nops]);
        std::swap(trunk_rows[size_t(j - g0)], patch[nops]);
      }
    });
    for (int64_t j = g0; j < g1; ++j) heads(j, trunk_rows[size_t(j - g0)]);
  }
}

}  // namespace b2f

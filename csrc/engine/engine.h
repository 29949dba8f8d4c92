// The executor: a model plan (fused conv ops, crops, heads) with weights packed for one
// kernel set, run over whole sequences. Device-independent bookkeeping lives here; the
// arithmetic is in the kernel sets (csrc/cpu/).
#pragma once
#include <cstdint>
#include <algorithm>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "basenji2_fast/kernels.h"
#include "basenji2_fast/winograd.h"
#include "basenji2_fast/parallel.h"
#include "basenji2_fast/stem.h"
#include "buffers.h"

namespace b2f {

struct OpDesc {
  enum Type { Conv = 0, Crop = 1 } type = Conv;
  // Conv: kernel [k][cin][cout] (Keras layout, BN folded), bias [cout]. The kernel is
  // borrowed (the caller's buffer, e.g. a memory-mapped file) and read only while the
  // Engine is constructed: it keeps packed copies, so a model is in memory once.
  int k = 1, dil = 1, cin = 0, cout = 0, pool = 1;
  bool gelu_in = true;
  int residual = -1;  // index of the op whose input is added after the conv, or -1
  const void* kernel = nullptr;
  bool kernel_bf16 = false;  // kernel holds bf16 bit patterns (uint16), else fp32
  // Compute in bf16: weights packed once as bf16, the (activated) input stored as bf16 by
  // the op before, fp32 accumulation and epilogue. Needs gelu_in (the raw, pre-activation
  // tensors that residuals add stay fp32). Ignored for the stem, a table gather in fp32.
  bool bf16 = false;
  // Fast convolution: Winograd F(fast_m, k) tiles (winograd.h), 0 = direct. The weights are
  // transformed once while packing (with bf16, the transformed weights and inputs are bf16).
  int fast_m = 0;
  std::vector<float> bias;
  // Crop
  int left = 0, right = 0;
};

// The plan's tensor shapes, checked the same way for every engine: lengths[i] / channels[i]
// of tensor i (op i's input; i = ops.size() is the trunk output). The ops must chain, pools
// divide, residuals come from an earlier op of the output's shape, crops leave rows.
// Throws std::invalid_argument naming the op.
inline void plan_shapes(int64_t seq_length, const std::vector<OpDesc>& ops, std::vector<int64_t>& lengths,
                        std::vector<int>& channels) {
  const auto fail = [](const std::string& msg) { throw std::invalid_argument(msg); };
  const int n = int(ops.size());
  if (seq_length < 1) fail("seq_length must be >= 1");
  if (n == 0 || ops[0].type != OpDesc::Conv || ops[0].cin != 4)
    fail("the first op must be a convolution over the 4-channel one-hot input");
  lengths.assign(n + 1, 0);
  channels.assign(n + 1, 0);
  lengths[0] = seq_length;
  channels[0] = 4;
  for (int i = 0; i < n; ++i) {
    const OpDesc& op = ops[i];
    const std::string at = "op " + std::to_string(i) + ": ";
    if (op.type == OpDesc::Conv) {
      if (op.cin != channels[i]) fail(at + "input channels do not chain");
      if (op.k % 2 != 1) fail(at + "even kernel sizes are not supported");
      // The stem's kernels address a register tile's taps and its table with int32 offsets.
      if (i == 0 && (op.k > 63 || int64_t(op.k) * kStemCodes * (op.cout + 64) >= (int64_t(1) << 31)))
        fail(at + "the stem's kernel size must be at most 63 and its table under 2^31 floats");
      if (op.dil < 1) fail(at + "dilation must be >= 1");
      if (op.cout < 1) fail(at + "no output channels");
      if (op.pool != 1 && op.pool != 2) fail(at + "only max-pool sizes 1 and 2 are supported");
      if (op.pool == 2 && lengths[i] % 2) fail(at + "odd length before a max-pool");
      if (!op.kernel || op.bias.size() != size_t(op.cout)) fail(at + "weight sizes do not match the shape");
      if (op.residual >= i) fail(at + "residual source must be an earlier op");
      if (op.residual >= 0 && (lengths[op.residual] != lengths[i] || channels[op.residual] != op.cout))
        fail(at + "residual shape does not match");
      if (op.residual == 0) fail(at + "a residual from the one-hot input is not supported");
      if (op.bf16 && i > 0 && !op.gelu_in) fail(at + "bf16 needs an activated input (gelu_in); run this op in fp32");
      if (op.fast_m != 0) {
        if (i == 0) fail(at + "the stem is a table gather; it has no fast convolution");
        const std::string why = fast_unsupported(op.fast_m, op.k, op.pool, op.dil);
        if (!why.empty()) fail(at + why);
      }
      lengths[i + 1] = lengths[i] / op.pool;
      channels[i + 1] = op.cout;
    } else {
      if (i == 0) fail(at + "bad crop");
      lengths[i + 1] = lengths[i] - op.left - op.right;
      channels[i + 1] = channels[i];
      if (op.left < 0 || op.right < 0 || lengths[i + 1] <= 0) fail(at + "bad crop");
    }
  }
}

// The tensors of a plan and what reads them: the one analysis of tensor lifetimes that every
// engine allocates by and the incremental path patches. Tensor i is op i's input (tensor 0 the
// one-hot input; tensor n = ops.size() the trunk output, read by the heads and returned as the
// embeddings, activated when final_gelu). Walking backwards, a crop passes on the readers of
// the tensor it produces.
struct TensorPlan {
  std::vector<int64_t> lengths;  // rows (plan_shapes)
  std::vector<int> channels;
  std::vector<char> act;       // read activated: by a conv with gelu_in, or by the heads (final_gelu)
  std::vector<char> raw;       // read pre-activation: by a conv without gelu_in, or by the heads
  std::vector<char> residual;  // read pre-activation by a residual add (always fp32)
  std::vector<int64_t> halo;   // zero rows each side that its conv reader reads beyond the layer
  std::vector<int> last_use;   // the last op that reads it (n: the heads)
};

// plan_shapes, then the readers. halo: conv_halo, and for a fast conv also the rows its last
// tile block reads beyond the layer's end (conv_reads).
inline TensorPlan plan_tensors(int64_t seq_length, const std::vector<OpDesc>& ops, bool final_gelu) {
  TensorPlan t;
  plan_shapes(seq_length, ops, t.lengths, t.channels);
  const int n = int(ops.size());
  t.act.assign(n + 1, 0), t.raw.assign(n + 1, 0), t.residual.assign(n + 1, 0);
  t.halo.assign(n + 1, 0), t.last_use.assign(n + 1, -1);
  (final_gelu ? t.act : t.raw)[n] = 1;
  t.last_use[n] = n;
  for (int i = n - 1; i >= 0; --i) {
    const OpDesc& op = ops[i];
    if (op.type == OpDesc::Conv) {
      (op.gelu_in ? t.act : t.raw)[i] = 1;
      int64_t lo, hi;
      conv_reads(0, t.lengths[i], fast_block(op.fast_m, op.dil), conv_halo(op.k, op.dil), lo, hi);
      t.halo[i] = std::max(-lo, hi - t.lengths[i]);
      if (op.residual >= 0) {
        t.residual[op.residual] = 1;
        t.last_use[op.residual] = std::max(t.last_use[op.residual], i);
      }
    } else {
      t.act[i] |= t.act[i + 1], t.raw[i] |= t.raw[i + 1], t.residual[i] |= t.residual[i + 1];
    }
    t.last_use[i] = std::max(t.last_use[i], i);
  }
  return t;
}

// A borrowed conv kernel [k][cin][cout], fp32 or bf16 bits.
struct KernelRef {
  const void* data = nullptr;
  bool bf16 = false;
};

struct HeadRequest {
  int head = 0;
  std::vector<int> tracks;  // columns of the head to compute; empty = all
};

class Engine {
 public:
  // tile_floats: the largest stem/tower activation tile, in floats (0 = no tiling: whole
  // tensors, the fastest and the most memory).
  // head_bf16: heads compute in bf16 (weights bf16, the activated trunk output stored bf16).
  // packed(i): called once op i's weights are packed (the stem's last), so that the caller
  // can release the memory it lent (e.g. drop a file mapping's pages) before the next op
  // is read: the model is then never in memory twice.
  Engine(int64_t seq_length, Gelu gelu, bool final_gelu, std::vector<OpDesc> ops, int threads,
         const std::string& isa, int64_t tile_floats = 4 << 20, bool head_bf16 = false,
         const std::function<void(int)>& packed = nullptr);

  // weight [channels][tracks] (row-major; fp32, or bf16 bit patterns when weight_bf16),
  // bias [tracks]. Returns the head's index.
  int add_head(const void* weight, bool weight_bf16, const float* bias, int channels, int tracks, OutAct act);

  // codes [batch][seq_length] (A,C,G,T,N,uniform = 0..5). out: [batch][n_bins][trunk_channels].
  void trunk(const uint8_t* codes, int64_t batch, bool n_uniform, float* out) const;
  // outs[r]: [batch][n_bins][tracks of request r]. One trunk pass serves every request.
  void predict(const uint8_t* codes, int64_t batch, bool n_uniform, const std::vector<HeadRequest>& reqs,
               const std::vector<float*>& outs) const;

  // The gradient of a summed prediction with respect to the one-hot input, in fp32:
  //   out[b][q][ch] = d/dx[q][ch] sum_{bin in bins} sum_{t in req.tracks} head(x_b)[bin][t]
  // where x_b is sequence b's one-hot [seq_length][4] as the engine reads its codes (A,C,G,T
  // one-hot; N all zeros, or 0.25 per channel when n_uniform; code 5 always 0.25). bins: output
  // bins, a bin listed twice counts twice; empty = all. out: [batch][seq_length][4].
  // Needs fp32 ops and heads (throws std::invalid_argument otherwise). See backward.cpp.
  // kernels[i]: op i's kernel [k][cin][cout] as the forward was built from, needed for the
  // fast (Winograd) ops, whose packing holds only the transformed weights; the engine does
  // not keep a second copy, so the caller lends them per call. Others may be empty.
  void gradient(const uint8_t* codes, int64_t batch, bool n_uniform, const HeadRequest& req,
                const std::vector<int>& bins, float* out, const std::vector<KernelRef>& kernels = {}) const;

  // One conv op (i >= 1) over output positions [p0, p1) of its input coordinates, from its
  // pre-activation input rows (fp32; a bf16 op rounds their activation to bf16) [x0, x0 + x_rows) (rows outside the layer are the zero padding;
  // the rows [p0 - halo, p1 + halo) inside the layer must be given) and, for a residual op,
  // the residual rows [p0, p1). out: [(p1 - p0) / pool][cout]. This is the primitive for
  // tiling a sequence and for recomputing only a mutation's receptive-field cone.
  // activated: x already is the op's (activated) input; a bf16 op rounds it to bf16.
  void op_range(int i, const float* x, int64_t x0, int64_t x_rows, const float* res, int64_t p0, int64_t p1,
                float* out, bool activated = false) const;
  // Input rows [lo, hi) op i reads to produce its outputs [p0, p1) (pre-pool positions): the
  // range plus the halo, for a fast conv rounded out to whole tile blocks first.
  void op_reads(int i, int64_t p0, int64_t p1, int64_t& lo, int64_t& hi) const;
  // Outputs [o0, o1) of op i whose computation reads any of its input rows [lo, hi).
  void op_reached(int i, int64_t lo, int64_t hi, int64_t& o0, int64_t& o1) const;
  // How op i computes: "stem" (table gather), "direct", "F(m,k)" (Winograd tiles) or "crop".
  std::string op_algorithm(int i) const;
  // The arithmetic the engine executes, in FLOPs (a multiply-add counts 2): the one place it
  // is counted, so that benchmarks report work done next to the model's nominal work.
  // op_flops: op i computing its output positions [p0, p1) (before pooling). A direct
  // convolution: 2 * k * cin * cout per position. A fast one computes the whole tile blocks
  // covering the range: per tile n GEMM products per (cin, cout), the input transform's
  // nonzero coefficients per input channel and the output transform's m n per output channel.
  // The stem is a table gather: it adds k table rows per position, k * cout. A crop computes
  // nothing. nominal: what a direct convolution (the stem's included) computes instead.
  int64_t op_flops(int i, int64_t p0, int64_t p1, bool nominal = false) const;
  // pass_flops()[i]: op i in one forward pass of one sequence, over the ranges the executor
  // computes (the tiled stem and tower recompute a few halo positions at tile edges).
  std::vector<int64_t> pass_flops() const;
  // A head's GEMM over `rows` trunk positions for `tracks` of its columns: 2 * channels *
  // tracks per row (the softplus is not counted).
  int64_t head_flops(int h, int tracks, int64_t rows) const;
  int op_in_channels(int i) const { return channels_.at(i); }
  int op_out_channels(int i) const { return channels_.at(i + 1); }
  int op_pool(int i) const { return ops_.at(i).type == OpDesc::Conv ? ops_.at(i).pool : 1; }
  int op_kernel_size(int i) const { return ops_.at(i).type == OpDesc::Conv ? ops_.at(i).k : 0; }
  int n_ops() const { return int(ops_.size()); }

  // One sequence's activations between two ops.
  // A tensor's rows with `halo` zero rows on each side: row q at data + (halo + q) * channels
  // elements of `esize` bytes (4: fp32, 2: bf16).
  // Its memory comes from, and returns to, the engine's buffer pool.
  struct Tensor {
    HeapPool* pool = nullptr;
    std::unique_ptr<float[]> buf;
    size_t capacity = 0;
    int64_t rows = 0, halo = 0;
    int channels = 0, esize = 4;
    void alloc(HeapPool& p, int64_t r, int64_t h, int c, int es = 4) {
      pool = &p, rows = r, halo = h, channels = c, esize = es;
      buf = p.get(size_t(((r + 2 * h) * c * es + 3) / 4), capacity);
      // Kernels write only rows [0, rows); the margins are the "same" padding.
      std::memset(bytes(), 0, size_t(h * c * es));
      std::memset(bytes() + (h + r) * c * es, 0, size_t(h * c * es));
    }
    char* bytes() const { return reinterpret_cast<char*>(buf.get()); }
    char* row0() const { return bytes() + halo * channels * esize; }
    bool empty() const { return !buf; }
    void release() {
      if (buf) pool->put(std::move(buf), capacity);
    }
    // Takes o's buffer (o becomes empty), releasing this one's first.
    void take(Tensor& o) {
      release();
      pool = o.pool, buf = std::move(o.buf), capacity = o.capacity;
      rows = o.rows, halo = o.halo, channels = o.channels, esize = o.esize;
    }
    ~Tensor() { release(); }
  };

  // Every tensor of one sequence's forward pass, kept for recomputing only what a
  // single-base substitution changes (predict_substitutions).
  struct TrunkCache {
    std::vector<uint8_t> padded;  // codes with the stem's halo of kCodeOutside each side
    bool n_uniform = false;
    std::vector<Tensor> raw, act;  // per tensor, the forms the network reads (else empty)
    const char* trunk_out = nullptr;  // [n_bins][trunk_channels] in the heads' input type, in raw/act
  };
  std::unique_ptr<TrunkCache> cache_trunk(const uint8_t* codes, bool n_uniform) const;

  // ALT predictions of n single-base substitutions (pos[j], alt[j] in 0..5) of the cached
  // sequence, recomputing at each layer only the positions the change reaches (its
  // receptive-field cone); equal to full forward passes of the mutated sequences, bit for
  // bit. ref_outs[r]: [n_bins][tracks]; alt_outs[r]: [n][n_bins][tracks].
  // ref_ready: ref_outs already hold the REF predictions (from an earlier call), so the REF
  // head is not run again.
  void predict_substitutions(const TrunkCache& c, const int64_t* pos, const uint8_t* alt, int64_t n,
                             const std::vector<HeadRequest>& reqs, const std::vector<float*>& ref_outs,
                             const std::vector<float*>& alt_outs, bool ref_ready = false) const;

  // One trunk pass of codes [seq_length] (as trunk(), output discarded), timed: per op (crops
  // included; the tiled stem and tower summed over their tiles), then the heads of `reqs`
  // (run_head over the trunk output) as a last entry, the wall seconds ([0, n_ops]) and then
  // the CPU seconds of all the process's threads ([n_ops + 1, 2 n_ops + 1]).
  std::vector<double> profile(const uint8_t* codes, bool n_uniform, const std::vector<HeadRequest>& reqs) const;
  // How many tiles the stem and tower (the prefix, ops [0, prefix_)) run in; 1 = untiled.
  int64_t prefix_tiles() const;
  // Frees the activation buffers kept between calls.
  void release_buffers() const { pool_.clear(), gradient_blocks_.clear(); }

  int64_t seq_length() const { return seq_length_; }
  int64_t n_bins() const { return lengths_.back(); }
  int trunk_channels() const { return channels_.back(); }
  int head_tracks(int h) const { return heads_.at(h).tracks; }
  int n_heads() const { return int(heads_.size()); }
  int threads() const { return threads_; }
  const char* isa() const { return kernels_->name; }
  // Bytes the packed weights (ops, stem tables, heads) hold.
  int64_t weight_bytes() const;

 private:
  friend class Backward;  // the backward pass (backward.cpp) reads the plan and packs weights
  struct Packed {
    std::vector<float> w, bias;  // panels of kernels_->nr output channels, zero-padded
    std::vector<uint16_t> wb;    // bf16: weight pairs (bf16_weight_index) instead of w
    bool bf16 = false;
    Winograd wino;  // a fast conv's transforms (w, wb then hold the transformed weights)
    // The kernels' view of this packing: weights, their precision, a fast conv's transforms,
    // the epilogue's bias.
    void feed(cpu::ConvArgs& a) const {
      a.w = bf16 ? static_cast<const void*>(wb.data()) : w.data();
      a.bf16 = bf16;
      if (wino.fast()) a.fast.m = wino.m, a.fast.n = wino.n, a.fast.at = wino.at.data(), a.fast.bt = wino.bt.data();
      a.epi.bias = bias.data();
    }
  };
  struct Head {
    Packed all;  // every track, packed once; track subsets are gathered from it
    int channels = 0, tracks = 0;
    OutAct act = OutAct::None;
  };
  Packed pack(const void* kernel, bool kernel_bf16, const float* bias, int k, int cin, int cout, bool bf16) const;
  // A fast conv's packing: kernel [k][cin][cout] transformed for Winograd F(m, k) (winograd.h).
  Packed pack_fast(const void* kernel, bool kernel_bf16, const float* bias, int k, int cin, int cout, int m,
                   bool bf16) const;
  // Bytes per element of tensor i's activated form (bf16 when the op reading it is).
  int act_es(int i) const { return act_bf16_[i] ? 2 : 4; }
  // Bytes per element of the form op i (in the tiled prefix) reads of tensor i.
  int prefix_es(int i) const { return ops_[i].gelu_in ? act_es(i) : 4; }
  const Packed& head_panel(const HeadRequest& r) const;
  std::vector<float> stem_table(bool n_uniform) const;
  // Runs the trunk on one sequence; returns the trunk output rows (activated if final_gelu)
  // in the heads' input type (bf16 when head_bf16), the tensor itself (no copy).
  // seconds: when given, the wall and CPU seconds spent in each op are added to it (profile).
  void run_trunk(const uint8_t* codes, bool n_uniform, Tensor& trunk_out, TrunkCache* keep = nullptr,
                 std::vector<double>* seconds = nullptr) const;
  // The head over rows [0, rows) of a trunk output: out [rows][tracks].
  void run_head(const void* trunk, int64_t rows, const HeadRequest& r, const Packed& panel, float* out,
                int threads = 0) const;
  // One kernel call over pre-pool positions [p0, p1); pointers are position-origin, null
  // where a form is not written.
  // threads: 0 = the engine's thread count (1 inside a caller's own parallel loop).
  // out_act's type is tensor (i + 1)'s activated form (act_bf16_), in's op i's.
  // choice: where a max-pooled op records which row of each pair it took (Epilogue::choice,
  // position-origin; the backward pass routes gradients by it), or null.
  // out_dgelu: out_raw rows hold GELU' of the raw values (Epilogue::out_dgelu).
  void stem_call(const uint8_t* codes, bool n_uniform, int64_t p0, int64_t p1, float* out_raw, void* out_act,
                 int64_t stride, int threads = 0, uint8_t* choice = nullptr, int64_t choice_stride = 0,
                 bool out_dgelu = false) const;
  void conv_call(int i, const void* in, const float* res, int64_t p0, int64_t p1, float* out_raw,
                 void* out_act, int threads = 0, uint8_t* choice = nullptr, int64_t choice_stride = 0,
                 bool out_dgelu = false) const;
  // The prefix's row ranges for a tile, and its run.
  void prefix_ranges(int64_t a, int64_t b, std::vector<int64_t>& lo, std::vector<int64_t>& hi,
                     std::vector<int64_t>& need_lo, std::vector<int64_t>& need_hi) const;
  void run_prefix_tiled(const uint8_t* codes, bool n_uniform, int64_t tiles, float* out_raw, void* out_act,
                        std::vector<double>* seconds) const;

  int64_t seq_length_;
  Gelu gelu_;
  bool final_gelu_;
  int threads_;
  int64_t tile_floats_;
  const cpu::KernelSet* kernels_;
  std::vector<OpDesc> ops_;
  std::vector<Packed> packed_;
  std::vector<int64_t> lengths_;  // lengths_[i] = rows of op i's input; back() = trunk output
  std::vector<int> channels_;
  std::vector<int64_t> halo_;       // zero rows each side that tensor i's buffer needs
  std::vector<char> need_raw_, need_act_;
  std::vector<char> act_bf16_;  // tensor i's activated form is stored as bf16
  bool head_bf16_ = false;
  std::vector<int> last_use_;
  int prefix_ = 0;  // ops [0, prefix_) may run tile by tile (see run_prefix_tiled)
  std::vector<float> stem_tables_[2];  // N as zeros, N as 0.25
  std::vector<float> stem_kernel_;     // the stem's kernel [k][4][cout] in fp32, for the backward pass
  std::vector<Head> heads_;
  // Activation buffers kept between sequences and calls (buffers.h): at most one forward
  // pass's peak working set.
  mutable HeapPool pool_;
  // The backward pass's buffers, kept between gradient calls (buffers.h): about one gradient
  // pass's working set once a gradient has run.
  mutable BlockPool gradient_blocks_;

  mutable ForkSafeMutex cache_mutex_;
  mutable std::map<std::pair<int, std::vector<int>>, std::unique_ptr<Packed>> head_cache_;
};

}  // namespace b2f

// The CUDA executor (see cuda_engine.h): plan bookkeeping, weights uploaded once, activation
// buffers allocated once per batch capacity, the forward pass enqueued on one stream
// (optionally captured once as a CUDA Graph and replayed).
#include "cuda/cuda_engine.h"

#include <algorithm>
#include <stdexcept>
#include <string>

#include "basenji2_fast/stem.h"
#include "cuda/kernels.cuh"  // with the CUDA runtime (or, in the emulator build, its stand-in)
#include "cuda/packing.h"

#ifndef B2F_CUDA_ARCHS
#define B2F_CUDA_ARCHS "unknown"
#endif

namespace b2f {
namespace cuda {

namespace {

[[noreturn]] void fail(const std::string& msg) { throw std::invalid_argument(msg); }

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string("CUDA error: ") + cudaGetErrorString(e) + " (" + what + ")");
}
#define CUDA_CHECK(expr) check((expr), #expr)

template <typename T>
int64_t ceil_div(int64_t a, T b) {
  return (a + b - 1) / b;
}

}  // namespace

class DeviceBuffer {
 public:
  explicit DeviceBuffer(size_t bytes) : bytes_(bytes) {
    if (bytes_) {
      CUDA_CHECK(cudaMalloc(&ptr_, bytes_));
      // Halo rows and padded channels must read as zeros; kernels never write them.
      CUDA_CHECK(cudaMemset(ptr_, 0, bytes_));
    }
  }
  ~DeviceBuffer() {
    if (ptr_) cudaFree(ptr_);
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  template <typename T>
  T* as() const {
    return static_cast<T*>(ptr_);
  }
  void* data() const { return ptr_; }
  size_t bytes() const { return bytes_; }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

namespace {

template <typename T>
std::unique_ptr<DeviceBuffer> upload(const std::vector<T>& v) {
  auto buf = std::make_unique<DeviceBuffer>(sizeof(T) * v.size());
  if (!v.empty()) CUDA_CHECK(cudaMemcpy(buf->data(), v.data(), sizeof(T) * v.size(), cudaMemcpyHostToDevice));
  return buf;
}

}  // namespace

int device_count(std::string* why) {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    cudaGetLastError();  // clear the sticky-free error so later calls start clean
    if (why) *why = std::string("cudaGetDeviceCount: ") + cudaGetErrorString(e);
    return 0;
  }
  if (n == 0 && why) *why = "no CUDA device is visible";
  return n;
}

std::string device_name(int device) {
  cudaDeviceProp prop;
  CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
  return std::string(prop.name) + " (sm_" + std::to_string(prop.major) + std::to_string(prop.minor) + ", " +
         std::to_string(prop.totalGlobalMem >> 20) + " MiB)";
}

const char* compiled_archs() { return B2F_CUDA_ARCHS; }

const char* nvcc_version() {
  static const std::string v = std::to_string(__CUDACC_VER_MAJOR__) + "." + std::to_string(__CUDACC_VER_MINOR__) +
                               "." + std::to_string(__CUDACC_VER_BUILD__);
  return v.c_str();
}

CudaEngine::CudaEngine(int64_t seq_length, Gelu gelu, bool final_gelu, std::vector<OpDesc> ops, int device,
                       bool use_graphs)
    : seq_length_(seq_length), gelu_(gelu), final_gelu_(final_gelu), device_(device), use_graphs_(use_graphs),
      ops_(std::move(ops)) {
  // The plan's checks (as the CPU Engine's) come first: a bad plan is a bad plan on any machine.
  const int n = int(ops_.size());
  for (const OpDesc& op : ops_)
    if (op.fast_m) fail("the CUDA engine runs direct convolution (fast_m must be 0)");
  // The plan's checks and readers (as the CPU Engine's): convs and heads read bf16 forms (the
  // tensor-core inputs, with halo; tensor 0 is the codes, gathered by the stem), residual adds
  // and the trunk output (the embeddings) fp32 ones.
  TensorPlan plan = plan_tensors(seq_length, ops_, final_gelu_);
  if (!ops_[0].gelu_in) fail("the stem must be pre-activated (GELU on the one-hot input)");
  lengths_ = std::move(plan.lengths), channels_ = std::move(plan.channels), halo_ = std::move(plan.halo);
  padded_.resize(n + 1);
  for (int i = 0; i <= n; ++i) padded_[i] = pad_channels(channels_[i]);
  need_act16_ = plan.act, need_raw16_ = plan.raw, need_raw32_ = plan.residual;
  need_act16_[0] = need_raw16_[0] = 0;
  need_act32_.assign(n + 1, 0);
  (final_gelu_ ? need_act32_ : need_raw32_)[n] = 1;  // the trunk output (embeddings)

  std::string why;
  const int count = device_count(&why);
  if (count == 0) throw std::runtime_error("no usable CUDA device (" + why + ")");
  if (device < 0 || device >= count)
    throw std::runtime_error("CUDA device " + std::to_string(device) + " does not exist (" + std::to_string(count) +
                             " visible)");
  CUDA_CHECK(cudaSetDevice(device_));
  cudaDeviceProp prop;
  CUDA_CHECK(cudaGetDeviceProperties(&prop, device_));
  if (prop.major < 8)
    throw std::runtime_error("CUDA device " + std::to_string(device) + " (" + prop.name + ") has compute capability " +
                             std::to_string(prop.major) + "." + std::to_string(prop.minor) +
                             "; the bf16 tensor-core kernels need 8.0 or newer");
  cudaStream_t s;
  CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  stream_ = s;

  layers_.resize(n);
  for (int i = 0; i < n; ++i) {
    const OpDesc& op = ops_[i];
    if (op.type != OpDesc::Conv) continue;
    layers_[i].bias = upload(pad_bias(op.bias.data(), op.cout));
    weight_bytes_ += int64_t(layers_[i].bias->bytes());
    if (i == 0) continue;  // the stem runs from its tables
    layers_[i].w = upload(pack_conv_weights(op.kernel, op.kernel_bf16, op.k, op.cin, op.cout));
    weight_bytes_ += int64_t(layers_[i].w->bytes());
  }
  for (int u = 0; u < 2; ++u) {
    stem_tables_[u] = upload(stem_table(ops_[0].kernel, ops_[0].kernel_bf16, ops_[0].k, ops_[0].cout, padded_[1], gelu_, u == 1));
    weight_bytes_ += int64_t(stem_tables_[u]->bytes());
  }
  for (OpDesc& op : ops_) op.kernel = nullptr;  // borrowed; only the device copies are read from now on
  forms_.resize(n + 1);
}

CudaEngine::~CudaEngine() {
  cudaSetDevice(device_);
  drop_graph();
  if (stream_) {
    cudaStreamSynchronize(static_cast<cudaStream_t>(stream_));
    cudaStreamDestroy(static_cast<cudaStream_t>(stream_));
  }
}

int CudaEngine::add_head(const float* weight, const float* bias, int channels, int tracks, OutAct act) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (channels != trunk_channels())
    fail("head expects " + std::to_string(channels) + " channels, the trunk gives " + std::to_string(trunk_channels()));
  CUDA_CHECK(cudaSetDevice(device_));
  Head h;
  h.packed = pack_conv_weights(weight, false, 1, channels, tracks);
  h.bias.assign(bias, bias + tracks);
  h.all.w = upload(h.packed);
  h.all.bias = upload(pad_bias(bias, tracks));
  h.all.tracks = tracks;
  h.channels = channels, h.tracks = tracks, h.act = act;
  weight_bytes_ += int64_t(h.all.w->bytes() + h.all.bias->bytes());
  heads_.push_back(std::move(h));
  return int(heads_.size()) - 1;
}

const CudaEngine::Panel& CudaEngine::panel(const HeadRequest& r) {
  // Only the requested tracks' columns are packed, so the head GEMM computes only those.
  const Head& h = heads_.at(r.head);
  if (r.tracks.empty()) return h.all;
  auto key = std::make_pair(r.head, r.tracks);
  auto it = subsets_.find(key);
  if (it != subsets_.end()) return *it->second;
  std::vector<float> bias(r.tracks.size());
  for (size_t j = 0; j < r.tracks.size(); ++j) {
    const int col = r.tracks[j];
    if (col < 0 || col >= h.tracks) fail("track index " + std::to_string(col) + " out of range");
    bias[j] = h.bias[col];
  }
  auto p = std::make_unique<Panel>();
  p->w = upload(gather_columns(h.packed, h.channels, h.tracks, r.tracks));
  p->bias = upload(pad_bias(bias.data(), int(bias.size())));
  p->tracks = int(r.tracks.size());
  return *(subsets_[key] = std::move(p));
}

int64_t CudaEngine::activation_bytes() const {
  int64_t total = 0;
  for (const Forms& f : forms_)
    for (const auto* b : {&f.act16, &f.raw16, &f.raw32, &f.act32})
      if (*b) total += int64_t((*b)->bytes());
  return total;
}

void CudaEngine::release_buffers() {
  std::lock_guard<std::mutex> lock(mutex_);
  cudaSetDevice(device_);
  sync();
  drop_graph();
  for (Forms& f : forms_) f = Forms();
  codes_.reset();
  outs_.clear();
  capacity_ = 0;
}

void CudaEngine::set_use_graphs(bool on) {
  std::lock_guard<std::mutex> lock(mutex_);
  use_graphs_ = on;
  if (!on) drop_graph();
}

void CudaEngine::drop_graph() {
  if (graph_exec_) cudaGraphExecDestroy(static_cast<cudaGraphExec_t>(graph_exec_));
  graph_exec_ = nullptr;
  graph_key_.clear();
}

void CudaEngine::sync() { CUDA_CHECK(cudaStreamSynchronize(static_cast<cudaStream_t>(stream_))); }

void CudaEngine::ensure_capacity(int64_t batch) {
  if (batch <= capacity_) return;
  sync();
  drop_graph();
  const int n = int(ops_.size());
  for (Forms& f : forms_) f = Forms();  // free before allocating the larger set
  for (int i = 1; i <= n; ++i) {
    const size_t with_halo = size_t(batch) * size_t(lengths_[i] + 2 * halo_[i]) * padded_[i];
    const size_t plain = size_t(batch) * size_t(lengths_[i]) * padded_[i];
    Forms& f = forms_[i];
    if (need_act16_[i]) f.act16 = std::make_unique<DeviceBuffer>(2 * with_halo);
    if (need_raw16_[i]) f.raw16 = std::make_unique<DeviceBuffer>(2 * with_halo);
    if (need_raw32_[i]) f.raw32 = std::make_unique<DeviceBuffer>(4 * plain);
    if (need_act32_[i]) f.act32 = std::make_unique<DeviceBuffer>(4 * plain);
  }
  codes_ = std::make_unique<DeviceBuffer>(size_t(batch) * size_t(seq_length_));
  outs_.clear();
  capacity_ = batch;
}

namespace {

// A bf16 form's row 0 (after the halo) and its elements per sequence.
bf16* row0_16(const DeviceBuffer& b, int64_t halo, int cp) { return b.as<bf16>() + halo * cp; }

Out out16(bf16* row0, int64_t seq, int cp, Act act) {
  Out o;
  o.ptr = row0, o.seq = seq, o.row = cp, o.cols = cp, o.is_bf16 = true, o.act = act;
  return o;
}

Out out32(float* row0, int64_t seq, int64_t row, int cols, Act act) {
  Out o;
  o.ptr = row0, o.seq = seq, o.row = row, o.cols = cols, o.is_bf16 = false, o.act = act;
  return o;
}

void launch_conv(const ConvParams& p, int64_t batch, cudaStream_t s) {
  const dim3 grid(unsigned(ceil_div(p.rows, kBM)), unsigned(ceil_div(p.cout_p, kBN)), unsigned(batch));
  B2F_LAUNCH(conv_kernel, grid, kConvThreads, s, p);
  CUDA_CHECK(cudaGetLastError());
}

}  // namespace

void CudaEngine::enqueue_trunk(const uint8_t* dcodes, int64_t batch, bool n_uniform) {
  const cudaStream_t s = static_cast<cudaStream_t>(stream_);
  const int n = int(ops_.size());
  // The epilogue of op i writes every form of tensor i + 1 that a later op reads.
  const auto epilogue = [&](int i) {
    const int t = i + 1, cp = padded_[t];
    const int64_t seq16 = (lengths_[t] + 2 * halo_[t]) * cp, seq32 = lengths_[t] * cp;
    Epilogue e;
    e.bias = layers_[i].bias->as<float>();
    e.pool = ops_[i].pool;
    e.gelu = gelu_;
    const Forms& f = forms_[t];
    if (f.act16) e.outs[e.n_outs++] = out16(row0_16(*f.act16, halo_[t], cp), seq16, cp, Act::Gelu);
    if (f.raw16) e.outs[e.n_outs++] = out16(row0_16(*f.raw16, halo_[t], cp), seq16, cp, Act::None);
    if (f.raw32) e.outs[e.n_outs++] = out32(f.raw32->as<float>(), seq32, cp, cp, Act::None);
    if (f.act32) e.outs[e.n_outs++] = out32(f.act32->as<float>(), seq32, cp, cp, Act::Gelu);
    return e;
  };

  {
    const OpDesc& op = ops_[0];
    StemParams p;
    p.codes = dcodes, p.len = seq_length_;
    p.table = stem_tables_[n_uniform ? 1 : 0]->as<float>();
    p.k = op.k, p.dil = op.dil, p.cout_p = padded_[1], p.rows_out = lengths_[1];
    p.epi = epilogue(0);
    const dim3 grid(unsigned(ceil_div(lengths_[1], kStemRows)), unsigned(batch));
    B2F_LAUNCH(stem_kernel, grid, kStemThreads, s, p);
    CUDA_CHECK(cudaGetLastError());
  }
  for (int i = 1; i < n; ++i) {
    const OpDesc& op = ops_[i];
    if (op.type == OpDesc::Crop) {
      // Rows [left, left + len) of each form, one strided copy per form for the whole batch.
      const int cp = padded_[i];
      const auto crop = [&](const std::unique_ptr<DeviceBuffer>& src, const std::unique_ptr<DeviceBuffer>& dst,
                            size_t esize, bool halo) {
        if (!dst) return;
        const int64_t hs = halo ? halo_[i] : 0, hd = halo ? halo_[i + 1] : 0;
        const char* from = src->as<char>() + size_t((hs + op.left) * cp) * esize;
        char* to = dst->as<char>() + size_t(hd * cp) * esize;
        CUDA_CHECK(cudaMemcpy2DAsync(to, size_t((lengths_[i + 1] + 2 * hd) * cp) * esize, from,
                                     size_t((lengths_[i] + 2 * hs) * cp) * esize, size_t(lengths_[i + 1] * cp) * esize,
                                     size_t(batch), cudaMemcpyDeviceToDevice, s));
      };
      const Forms &a = forms_[i], &b = forms_[i + 1];
      crop(a.act16, b.act16, 2, true);
      crop(a.raw16, b.raw16, 2, true);
      crop(a.raw32, b.raw32, 4, false);
      crop(a.act32, b.act32, 4, false);
      continue;
    }
    const Forms& f = forms_[i];
    const DeviceBuffer& in = op.gelu_in ? *f.act16 : *f.raw16;
    ConvParams p;
    p.in = row0_16(in, halo_[i], padded_[i]);
    p.in_seq = (lengths_[i] + 2 * halo_[i]) * padded_[i];
    p.cin_p = padded_[i];
    p.w = layers_[i].w->as<bf16>();
    p.cout_p = padded_[i + 1];
    p.k = op.k, p.dil = op.dil, p.rows = lengths_[i];
    p.epi = epilogue(i);
    if (op.residual > 0) {
      p.epi.res = forms_[op.residual].raw32->as<float>();
      p.epi.res_seq = lengths_[op.residual] * padded_[op.residual];
      p.epi.res_row = padded_[op.residual];
    }
    launch_conv(p, batch, s);
  }
}

void CudaEngine::enqueue_heads(int64_t batch, const std::vector<HeadRequest>& reqs,
                               const std::vector<const Panel*>& panels, const std::vector<float*>& douts) {
  const int n = int(ops_.size());
  const Forms& f = forms_[n];
  const DeviceBuffer& in = final_gelu_ ? *f.act16 : *f.raw16;
  for (size_t r = 0; r < reqs.size(); ++r) {
    const Panel& pn = *panels[r];
    const Head& h = heads_[reqs[r].head];
    ConvParams p;
    p.in = row0_16(in, halo_[n], padded_[n]);
    p.in_seq = (lengths_[n] + 2 * halo_[n]) * padded_[n];
    p.cin_p = padded_[n];
    p.w = pn.w->as<bf16>();
    p.cout_p = pad_channels(pn.tracks);
    p.k = 1, p.dil = 1, p.rows = lengths_[n];
    p.epi.bias = pn.bias->as<float>();
    p.epi.gelu = gelu_;
    // Only the real tracks are stored: [batch][bins][tracks], the caller's layout.
    p.epi.outs[p.epi.n_outs++] = out32(douts[r], lengths_[n] * pn.tracks, pn.tracks, pn.tracks,
                                       h.act == OutAct::Softplus ? Act::Softplus : Act::None);
    launch_conv(p, batch, static_cast<cudaStream_t>(stream_));
  }
}

void CudaEngine::run(const uint8_t* dcodes, int64_t batch, bool n_uniform, const std::vector<HeadRequest>& reqs,
                     const std::vector<float*>& douts, bool graph) {
  // Bound device memory for many distinct track selections: drop the cached subsets before
  // this call's are made (never while this call holds pointers to them). A captured graph may
  // read a panel about to be freed, so it goes too.
  size_t missing = 0;
  for (const auto& r : reqs) missing += !r.tracks.empty() && !subsets_.count(std::make_pair(r.head, r.tracks));
  if (missing && subsets_.size() + missing > 16) {
    drop_graph();
    subsets_.clear();
  }
  std::vector<const Panel*> panels;  // uploads (if any) happen before a capture starts
  for (const auto& r : reqs) panels.push_back(&panel(r));
  const cudaStream_t s = static_cast<cudaStream_t>(stream_);
  if (!graph) {
    enqueue_trunk(dcodes, batch, n_uniform);
    enqueue_heads(batch, reqs, panels, douts);
    return;
  }
  // The graph bakes in every pointer and size: replay only for the very same call shape.
  std::string key = std::to_string(batch) + (n_uniform ? "u" : "z") + "@" +
                    std::to_string(reinterpret_cast<uintptr_t>(dcodes));
  for (size_t r = 0; r < reqs.size(); ++r) {
    key += "|" + std::to_string(reqs[r].head) + ":" + std::to_string(reinterpret_cast<uintptr_t>(panels[r])) + ">" +
           std::to_string(reinterpret_cast<uintptr_t>(douts[r]));
  }
  if (!graph_exec_ || key != graph_key_) {
    drop_graph();
    CUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
    cudaGraph_t g = nullptr;
    try {
      enqueue_trunk(dcodes, batch, n_uniform);
      enqueue_heads(batch, reqs, panels, douts);
    } catch (...) {
      cudaStreamEndCapture(s, &g);  // leave the stream usable
      if (g) cudaGraphDestroy(g);
      throw;
    }
    CUDA_CHECK(cudaStreamEndCapture(s, &g));
    cudaGraphExec_t exec = nullptr;
    const cudaError_t e = cudaGraphInstantiate(&exec, g, 0);
    cudaGraphDestroy(g);
    CUDA_CHECK(e);
    graph_exec_ = exec;
    graph_key_ = key;
  }
  CUDA_CHECK(cudaGraphLaunch(static_cast<cudaGraphExec_t>(graph_exec_), s));
}

void CudaEngine::predict(const uint8_t* codes, int64_t batch, bool n_uniform, const std::vector<HeadRequest>& reqs,
                         const std::vector<float*>& outs) {
  if (reqs.size() != outs.size()) fail("one output buffer per head request");
  if (batch <= 0) return;
  std::lock_guard<std::mutex> lock(mutex_);
  CUDA_CHECK(cudaSetDevice(device_));
  ensure_capacity(batch);
  const cudaStream_t s = static_cast<cudaStream_t>(stream_);
  CUDA_CHECK(cudaMemcpyAsync(codes_->as<uint8_t>(), codes, size_t(batch * seq_length_), cudaMemcpyHostToDevice, s));
  std::vector<float*> douts;
  std::vector<size_t> bytes;
  if (outs_.size() < reqs.size()) outs_.resize(reqs.size());
  for (size_t r = 0; r < reqs.size(); ++r) {
    const int tracks = reqs[r].tracks.empty() ? heads_.at(reqs[r].head).tracks : int(reqs[r].tracks.size());
    bytes.push_back(sizeof(float) * size_t(batch * n_bins()) * size_t(tracks));
    if (!outs_[r] || outs_[r]->bytes() < bytes.back()) {
      sync();
      drop_graph();
      outs_[r].reset();
      // Sized for the capacity batch, so that smaller batches reuse it.
      outs_[r] = std::make_unique<DeviceBuffer>(bytes.back() / size_t(batch) * size_t(capacity_));
    }
    douts.push_back(outs_[r]->as<float>());
  }
  run(codes_->as<uint8_t>(), batch, n_uniform, reqs, douts, use_graphs_);
  for (size_t r = 0; r < reqs.size(); ++r)
    CUDA_CHECK(cudaMemcpyAsync(outs[r], douts[r], bytes[r], cudaMemcpyDeviceToHost, s));
  sync();
}

namespace {

void check_device_pointer(const void* p, int device, const char* what) {
  cudaPointerAttributes attr;
  CUDA_CHECK(cudaPointerGetAttributes(&attr, p));
  if (attr.type != cudaMemoryTypeDevice && attr.type != cudaMemoryTypeManaged)
    throw std::invalid_argument(std::string(what) + " is not CUDA device memory");
  if (attr.type == cudaMemoryTypeDevice && attr.device != device)
    throw std::invalid_argument(std::string(what) + " lives on CUDA device " + std::to_string(attr.device) +
                                ", the model on device " + std::to_string(device));
}

}  // namespace

void CudaEngine::predict_device(const uint8_t* codes, int64_t batch, bool n_uniform,
                                const std::vector<HeadRequest>& reqs, const std::vector<float*>& outs) {
  if (reqs.size() != outs.size()) fail("one output buffer per head request");
  if (batch <= 0) return;
  std::lock_guard<std::mutex> lock(mutex_);
  CUDA_CHECK(cudaSetDevice(device_));
  check_device_pointer(codes, device_, "the codes array");
  for (float* o : outs) check_device_pointer(o, device_, "an output array");
  ensure_capacity(batch);
  run(codes, batch, n_uniform, reqs, outs, false);  // caller's pointers change per call: no graph
  sync();
}

void CudaEngine::trunk(const uint8_t* codes, int64_t batch, bool n_uniform, float* out) {
  if (batch <= 0) return;
  std::lock_guard<std::mutex> lock(mutex_);
  CUDA_CHECK(cudaSetDevice(device_));
  ensure_capacity(batch);
  const cudaStream_t s = static_cast<cudaStream_t>(stream_);
  CUDA_CHECK(cudaMemcpyAsync(codes_->as<uint8_t>(), codes, size_t(batch * seq_length_), cudaMemcpyHostToDevice, s));
  enqueue_trunk(codes_->as<uint8_t>(), batch, n_uniform);
  const int n = int(ops_.size());
  const DeviceBuffer& t = final_gelu_ ? *forms_[n].act32 : *forms_[n].raw32;
  const size_t c = size_t(channels_[n]), cp = size_t(padded_[n]);
  CUDA_CHECK(cudaMemcpy2DAsync(out, c * 4, t.as<float>(), cp * 4, c * 4, size_t(batch * lengths_[n]),
                               cudaMemcpyDeviceToHost, s));
  sync();
}

// ---- single kernels, for tests -------------------------------------------------------------

namespace {

// Host fp32 [batch][rows][c] -> device bf16 [batch][halo + rows + halo][cp] (GELU first if act).
std::unique_ptr<DeviceBuffer> upload_bf16(const float* x, int64_t batch, int64_t rows, int c, int64_t halo, Gelu g,
                                          bool act, cudaStream_t s) {
  const int cp = pad_channels(c);
  auto tmp = std::make_unique<DeviceBuffer>(sizeof(float) * size_t(batch * rows * c));
  CUDA_CHECK(cudaMemcpy(tmp->as<float>(), x, tmp->bytes(), cudaMemcpyHostToDevice));
  auto out = std::make_unique<DeviceBuffer>(2 * size_t(batch * (rows + 2 * halo) * cp));
  const dim3 grid(unsigned(ceil_div(rows * c, 256)), unsigned(batch));
  B2F_LAUNCH(to_bf16_kernel, grid, 256, s, tmp->as<float>(), rows, c, out->as<bf16>() + halo * cp,
             (rows + 2 * halo) * cp, cp, g, act);
  CUDA_CHECK(cudaGetLastError());
  CUDA_CHECK(cudaStreamSynchronize(s));
  return out;
}

// Device [n_rows][cp] of T -> host [n_rows][c] fp32 (bf16 widened).
void download(const DeviceBuffer& b, bool is_bf16, int64_t n_rows, int c, int cp, float* out) {
  if (!is_bf16) {
    CUDA_CHECK(cudaMemcpy2D(out, size_t(c) * 4, b.as<float>(), size_t(cp) * 4, size_t(c) * 4, size_t(n_rows),
                            cudaMemcpyDeviceToHost));
    return;
  }
  std::vector<uint16_t> h(size_t(n_rows) * c);
  CUDA_CHECK(cudaMemcpy2D(h.data(), size_t(c) * 2, b.as<uint16_t>(), size_t(cp) * 2, size_t(c) * 2, size_t(n_rows),
                          cudaMemcpyDeviceToHost));
  for (size_t i = 0; i < h.size(); ++i) out[i] = bf16_to_f32(h[i]);
}

}  // namespace

void CudaEngine::op_forward(int i, const float* x, int64_t batch, const float* res, float* raw, float* act) {
  if (i < 1 || i >= n_ops() || ops_[i].type != OpDesc::Conv) fail("op_forward: op " + std::to_string(i) +
                                                                   " is not a convolution after the stem");
  const OpDesc& op = ops_[i];
  if (op.residual > 0 && !res) fail("op_forward: this op needs its residual rows");
  std::lock_guard<std::mutex> lock(mutex_);
  CUDA_CHECK(cudaSetDevice(device_));
  const cudaStream_t s = static_cast<cudaStream_t>(stream_);
  const int64_t L = lengths_[i], Lout = lengths_[i + 1], h = conv_halo(op.k, op.dil);
  const int cp = padded_[i], np = padded_[i + 1];
  auto in = upload_bf16(x, batch, L, op.cin, h, gelu_, op.gelu_in, s);
  std::unique_ptr<DeviceBuffer> r;
  if (op.residual > 0) {
    r = std::make_unique<DeviceBuffer>(4 * size_t(batch * L) * np);
    CUDA_CHECK(cudaMemcpy2D(r->as<float>(), size_t(np) * 4, res, size_t(op.cout) * 4, size_t(op.cout) * 4,
                            size_t(batch * L), cudaMemcpyHostToDevice));
  }
  DeviceBuffer raw32(4 * size_t(batch * Lout) * np), act16(2 * size_t(batch * Lout) * np);
  ConvParams p;
  p.in = in->as<bf16>() + h * cp, p.in_seq = (L + 2 * h) * cp, p.cin_p = cp;
  p.w = layers_[i].w->as<bf16>(), p.cout_p = np;
  p.k = op.k, p.dil = op.dil, p.rows = L;
  p.epi.bias = layers_[i].bias->as<float>();
  p.epi.pool = op.pool, p.epi.gelu = gelu_;
  if (r) p.epi.res = r->as<float>(), p.epi.res_seq = L * np, p.epi.res_row = np;
  p.epi.outs[p.epi.n_outs++] = out32(raw32.as<float>(), Lout * np, np, np, Act::None);
  p.epi.outs[p.epi.n_outs++] = out16(act16.as<bf16>(), Lout * np, np, Act::Gelu);
  launch_conv(p, batch, s);
  sync();
  download(raw32, false, batch * Lout, op.cout, np, raw);
  if (act) download(act16, true, batch * Lout, op.cout, np, act);
}

void CudaEngine::stem_forward(const uint8_t* codes, int64_t batch, bool n_uniform, float* raw, float* act) {
  std::lock_guard<std::mutex> lock(mutex_);
  CUDA_CHECK(cudaSetDevice(device_));
  const cudaStream_t s = static_cast<cudaStream_t>(stream_);
  const OpDesc& op = ops_[0];
  const int np = padded_[1];
  const int64_t Lout = lengths_[1];
  DeviceBuffer dcodes(size_t(batch * seq_length_)), raw32(4 * size_t(batch * Lout) * np),
      act16(2 * size_t(batch * Lout) * np);
  CUDA_CHECK(cudaMemcpy(dcodes.as<uint8_t>(), codes, dcodes.bytes(), cudaMemcpyHostToDevice));
  StemParams p;
  p.codes = dcodes.as<uint8_t>(), p.len = seq_length_;
  p.table = stem_tables_[n_uniform ? 1 : 0]->as<float>();
  p.k = op.k, p.dil = op.dil, p.cout_p = np, p.rows_out = Lout;
  p.epi.bias = layers_[0].bias->as<float>();
  p.epi.pool = op.pool, p.epi.gelu = gelu_;
  p.epi.outs[p.epi.n_outs++] = out32(raw32.as<float>(), Lout * np, np, np, Act::None);
  p.epi.outs[p.epi.n_outs++] = out16(act16.as<bf16>(), Lout * np, np, Act::Gelu);
  const dim3 grid(unsigned(ceil_div(Lout, kStemRows)), unsigned(batch));
  B2F_LAUNCH(stem_kernel, grid, kStemThreads, s, p);
  CUDA_CHECK(cudaGetLastError());
  sync();
  download(raw32, false, batch * Lout, op.cout, np, raw);
  if (act) download(act16, true, batch * Lout, op.cout, np, act);
}

void CudaEngine::head_forward(const float* x, int64_t batch, int64_t rows, const HeadRequest& r, float* out) {
  std::lock_guard<std::mutex> lock(mutex_);
  CUDA_CHECK(cudaSetDevice(device_));
  const cudaStream_t s = static_cast<cudaStream_t>(stream_);
  if (!r.tracks.empty() && !subsets_.count(std::make_pair(r.head, r.tracks)) && subsets_.size() >= 16) {
    drop_graph();
    subsets_.clear();
  }
  const Panel& pn = panel(r);
  const Head& h = heads_.at(r.head);
  const int cp = pad_channels(h.channels);
  auto in = upload_bf16(x, batch, rows, h.channels, 0, gelu_, false, s);
  DeviceBuffer o(4 * size_t(batch * rows) * size_t(pn.tracks));
  ConvParams p;
  p.in = in->as<bf16>(), p.in_seq = rows * cp, p.cin_p = cp;
  p.w = pn.w->as<bf16>(), p.cout_p = pad_channels(pn.tracks);
  p.k = 1, p.dil = 1, p.rows = rows;
  p.epi.bias = pn.bias->as<float>();
  p.epi.gelu = gelu_;
  p.epi.outs[p.epi.n_outs++] =
      out32(o.as<float>(), rows * pn.tracks, pn.tracks, pn.tracks, h.act == OutAct::Softplus ? Act::Softplus : Act::None);
  launch_conv(p, batch, s);
  sync();
  CUDA_CHECK(cudaMemcpy(out, o.as<float>(), o.bytes(), cudaMemcpyDeviceToHost));
}

}  // namespace cuda
}  // namespace b2f

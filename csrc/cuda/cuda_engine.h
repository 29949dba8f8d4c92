// The CUDA executor: the same model plan as the CPU Engine (OpDesc list, heads, track
// requests), run batch-wide on one GPU and one stream. Plain C++ interface (no CUDA headers),
// so the pybind11 module is compiled by the host compiler and only the .cu files need nvcc.
//
// Numerics: activations that a convolution reads are bf16 (tensor-core inputs), weights bf16,
// accumulation fp32; the epilogue (bias, residual, max-pool, GELU, softplus) runs in fp32 and
// the residual stream and the trunk output are kept in fp32. The stem is a gather from the
// fp32 table of stem.h (no rounding).
//
// Memory layout: a tensor is [batch][halo + rows + halo][pad16(channels)], channels last;
// the halo rows and padded channels hold zeros (the "same" padding; zero weights for padded
// channels), so the convolution's addressing needs no bounds checks on the sequence axis.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "engine/engine.h"

namespace b2f {
namespace cuda {

// Number of usable CUDA devices; 0 with a reason (no driver, no device) in `why`.
int device_count(std::string* why);
std::string device_name(int device);
// Architectures this build holds device code for, e.g. "80,90", and the nvcc version.
const char* compiled_archs();
const char* nvcc_version();

class DeviceBuffer;  // a cudaMalloc'ed block (cuda_engine.cu)

class CudaEngine {
 public:
  // Uploads the packed weights once. Throws std::runtime_error("no CUDA device: ...") when
  // the device cannot be used, std::invalid_argument for a bad plan.
  CudaEngine(int64_t seq_length, Gelu gelu, bool final_gelu, std::vector<OpDesc> ops, int device,
             bool use_graphs);
  ~CudaEngine();
  CudaEngine(const CudaEngine&) = delete;
  CudaEngine& operator=(const CudaEngine&) = delete;

  // weight [channels][tracks] (row-major), bias [tracks]. Returns the head's index.
  int add_head(const float* weight, const float* bias, int channels, int tracks, OutAct act);

  // codes [batch][seq_length] (0..5) in host memory; outs[r]: host [batch][n_bins][tracks of r].
  void predict(const uint8_t* codes, int64_t batch, bool n_uniform, const std::vector<HeadRequest>& reqs,
               const std::vector<float*>& outs);
  // The same with device pointers (e.g. cupy arrays): codes and outs on this engine's device.
  // The inputs must be ready (the caller's stream synchronised); outputs are ready on return.
  void predict_device(const uint8_t* codes, int64_t batch, bool n_uniform, const std::vector<HeadRequest>& reqs,
                      const std::vector<float*>& outs);
  // Trunk output (activated if final_gelu), host [batch][n_bins][trunk_channels], fp32.
  void trunk(const uint8_t* codes, int64_t batch, bool n_uniform, float* out);

  // Single kernels, for tests against the CPU engine (host arrays, unpadded channels).
  // op i >= 1 over a whole layer: x [batch][rows_i][cin] pre-activation input (GELU applied
  // and rounded to bf16 on the device when the op is pre-activated, else only rounded),
  // res [batch][rows_i][cout] or null. raw: [batch][rows_i / pool][cout] fp32 epilogue output;
  // act: gelu(raw) as stored for the next layer (bf16, widened to fp32), or null.
  void op_forward(int i, const float* x, int64_t batch, const float* res, float* raw, float* act);
  // The stem: raw [batch][rows_1][cout], act = its bf16 GELU (as op_forward).
  void stem_forward(const uint8_t* codes, int64_t batch, bool n_uniform, float* raw, float* act);
  // The head GEMM over x [batch][rows][channels] (rounded to bf16): out [batch][rows][tracks of r].
  void head_forward(const float* x, int64_t batch, int64_t rows, const HeadRequest& r, float* out);

  void release_buffers();

  int64_t seq_length() const { return seq_length_; }
  int64_t n_bins() const { return lengths_.back(); }
  int trunk_channels() const { return channels_.back(); }
  int head_tracks(int h) const { return heads_.at(h).tracks; }
  int n_heads() const { return int(heads_.size()); }
  int n_ops() const { return int(ops_.size()); }
  int op_in_channels(int i) const { return channels_.at(i); }
  int op_out_channels(int i) const { return channels_.at(i + 1); }
  int op_pool(int i) const { return ops_.at(i).type == OpDesc::Conv ? ops_.at(i).pool : 1; }
  int64_t op_in_rows(int i) const { return lengths_.at(i); }
  int device() const { return device_; }
  bool use_graphs() const { return use_graphs_; }
  void set_use_graphs(bool on);
  // Bytes of device memory held for weights and for activations.
  int64_t weight_bytes() const { return weight_bytes_; }
  int64_t activation_bytes() const;

 private:
  struct Layer {  // a conv's device weights
    std::unique_ptr<DeviceBuffer> w, bias;  // bf16 [k][cin_p][cout_p], fp32 [cout_p]
  };
  struct Panel {  // a head's (or a track subset's) device weights
    std::unique_ptr<DeviceBuffer> w, bias;  // bf16 [channels_p][tracks_p], fp32 [tracks_p]
    int tracks = 0;
  };
  struct Head {
    std::vector<uint16_t> packed;  // host copy [channels_p][tracks_p], for track subsets
    std::vector<float> bias;
    Panel all;
    int channels = 0, tracks = 0;
    OutAct act = OutAct::None;
  };
  // A tensor's forms on the device (any may be absent): bf16 with halo, read by convs
  // (act16 = gelu(x), raw16 = x), fp32 without halo (raw32 for residuals and the trunk
  // output, act32 for the activated trunk output).
  struct Forms {
    std::unique_ptr<DeviceBuffer> act16, raw16, raw32, act32;
  };

  const Panel& panel(const HeadRequest& r);
  void ensure_capacity(int64_t batch);
  // Enqueues the whole forward pass on stream_ for codes already on the device.
  void enqueue_trunk(const uint8_t* dcodes, int64_t batch, bool n_uniform);
  void enqueue_heads(int64_t batch, const std::vector<HeadRequest>& reqs, const std::vector<const Panel*>& panels,
                     const std::vector<float*>& douts);
  void run(const uint8_t* dcodes, int64_t batch, bool n_uniform, const std::vector<HeadRequest>& reqs,
           const std::vector<float*>& douts, bool graph);
  void sync();

  int64_t seq_length_;
  Gelu gelu_;
  bool final_gelu_;
  int device_;
  bool use_graphs_;
  std::vector<OpDesc> ops_;
  std::vector<int64_t> lengths_;
  std::vector<int> channels_, padded_;
  std::vector<int64_t> halo_;
  std::vector<char> need_act16_, need_raw16_, need_raw32_, need_act32_;
  std::vector<Layer> layers_;
  std::unique_ptr<DeviceBuffer> stem_tables_[2];  // fp32 [k][kStemCodes][cout_p], N as zeros / 0.25
  std::vector<Head> heads_;
  std::map<std::pair<int, std::vector<int>>, std::unique_ptr<Panel>> subsets_;
  int64_t weight_bytes_ = 0;

  // Activations, allocated for capacity_ sequences and reused by every call.
  int64_t capacity_ = 0;
  std::vector<Forms> forms_;
  std::unique_ptr<DeviceBuffer> codes_;                // uint8 [capacity][L]
  std::vector<std::unique_ptr<DeviceBuffer>> outs_;    // fp32 head outputs, per request slot

  void* stream_ = nullptr;  // cudaStream_t
  // One captured forward pass (CUDA Graph), replayed while batch, N encoding, requests and
  // buffers stay the same.
  void* graph_exec_ = nullptr;  // cudaGraphExec_t
  std::string graph_key_;
  void drop_graph();

  std::mutex mutex_;  // one call at a time: buffers and stream are shared
};

}  // namespace cuda
}  // namespace b2f

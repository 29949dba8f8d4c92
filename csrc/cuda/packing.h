// Host-side weight packing for the CUDA kernels: bf16 [k][cin_p][cout_p], channels padded to
// multiples of 16 (the tensor-core tile) with zero weights, so padded input channels add
// nothing and padded output channels compute exactly zero. Plain C++: tested without a GPU.
#pragma once
#include <cstdint>
#include <cstring>
#include <vector>

#include "basenji2_fast/bf16.h"

namespace b2f {
namespace cuda {

// Tensor-core fragment edge (WMMA 16x16x16): every channel count is padded to a multiple.
constexpr int kChannelAlign = 16;

inline int pad_channels(int c) { return (c + kChannelAlign - 1) / kChannelAlign * kChannelAlign; }

// bf16 rounding (to nearest even, as __float2bfloat16 on the device): basenji2_fast/bf16.h.
using b2f::bf16_to_f32;
using b2f::f32_to_bf16;

// kernel [k][cin][cout] (Keras layout, BN folded; fp32 or bf16 bits) -> bf16 [k][pad(cin)][pad(cout)].
inline std::vector<uint16_t> pack_conv_weights(const void* kernel, bool kernel_bf16, int k, int cin, int cout) {
  const int cp = pad_channels(cin), np = pad_channels(cout);
  std::vector<uint16_t> w(size_t(k) * cp * np, 0);
  for (int t = 0; t < k; ++t)
    for (int c = 0; c < cin; ++c)
      for (int j = 0; j < cout; ++j)
        w[(size_t(t) * cp + c) * np + j] = f32_to_bf16(weight_at(kernel, kernel_bf16, (size_t(t) * cin + c) * cout + j));
  return w;
}

// Head columns `cols` of a packed head [pad(channels)][pad(tracks)] -> [pad(channels)][pad(n)]:
// the GEMM then computes only the requested tracks.
inline std::vector<uint16_t> gather_columns(const std::vector<uint16_t>& packed, int channels, int tracks,
                                            const std::vector<int>& cols) {
  const int cp = pad_channels(channels), tp = pad_channels(tracks), np = pad_channels(int(cols.size()));
  std::vector<uint16_t> w(size_t(cp) * np, 0);
  for (int c = 0; c < channels; ++c)
    for (size_t j = 0; j < cols.size(); ++j) w[size_t(c) * np + j] = packed[size_t(c) * tp + cols[j]];
  return w;
}

// bias [n] -> [pad(n)] float, zeros after n.
inline std::vector<float> pad_bias(const float* bias, int n) {
  std::vector<float> b(size_t(pad_channels(n)), 0.f);
  std::memcpy(b.data(), bias, sizeof(float) * size_t(n));
  return b;
}

}  // namespace cuda
}  // namespace b2f

// bfloat16 bit patterns on the host: one definition for both engines and the weight packing.
#pragma once
#include <cstdint>
#include <cstring>

namespace b2f {

// bfloat16: the top half of an fp32 (bits carried as uint16). Rounding is to nearest even,
// as formats/engine_format.py's fp32_to_bf16_bits; NaN stays a quiet NaN.
inline uint16_t f32_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return uint16_t((u >> 16) | 0x0040u);
  return uint16_t((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}
inline float bf16_to_f32(uint16_t h) {
  const uint32_t u = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Element i of a borrowed weight array: fp32, or bf16 bit patterns (a bf16 file's mapping).
inline float weight_at(const void* w, bool bf16, size_t i) {
  return bf16 ? bf16_to_f32(static_cast<const uint16_t*>(w)[i]) : static_cast<const float*>(w)[i];
}

}  // namespace b2f

// Element types and the 16-bit float conversions every CPU kernel uses.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>

namespace fastattn {

enum class DType : int32_t {
  kFloat32 = 0,
  kFloat16 = 1,
  kBFloat16 = 2,
  kInt32 = 3,
  kInt64 = 4,
};

size_t dtype_size(DType dt);
const char* dtype_name(DType dt);
// Parses "float32" / "fp32" / "float16" / "fp16" / "half" / "bfloat16" / "bf16" / "int32" / "int64".
// Throws InvalidArgument naming the option `what` otherwise.
DType dtype_from_name(const std::string& name, const char* what = "dtype");
inline bool is_floating(DType dt) {
  return dt == DType::kFloat32 || dt == DType::kFloat16 || dt == DType::kBFloat16;
}

// Storage types for 16-bit floats: plain bit patterns, converted explicitly.
struct half_t {
  uint16_t bits;
};
struct bfloat16_t {
  uint16_t bits;
};

inline float bf16_to_float(uint16_t b) {
  uint32_t u = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Round to nearest even; NaN stays NaN.
inline uint16_t float_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

float half_to_float(uint16_t h);
uint16_t float_to_half(float f);

// Bulk conversions (vectorised where the CPU allows). n elements.
void convert_to_float(const void* src, DType src_type, float* dst, int64_t n);
void convert_from_float(const float* src, void* dst, DType dst_type, int64_t n);

template <typename T>
struct dtype_of;
template <>
struct dtype_of<float> {
  static constexpr DType value = DType::kFloat32;
};
template <>
struct dtype_of<half_t> {
  static constexpr DType value = DType::kFloat16;
};
template <>
struct dtype_of<bfloat16_t> {
  static constexpr DType value = DType::kBFloat16;
};
template <>
struct dtype_of<int32_t> {
  static constexpr DType value = DType::kInt32;
};
template <>
struct dtype_of<int64_t> {
  static constexpr DType value = DType::kInt64;
};

inline float to_float(float x) { return x; }
inline float to_float(half_t x) { return half_to_float(x.bits); }
inline float to_float(bfloat16_t x) { return bf16_to_float(x.bits); }
template <typename T>
inline T from_float(float x);
template <>
inline float from_float<float>(float x) {
  return x;
}
template <>
inline half_t from_float<half_t>(float x) {
  return half_t{float_to_half(x)};
}
template <>
inline bfloat16_t from_float<bfloat16_t>(float x) {
  return bfloat16_t{float_to_bf16(x)};
}

}  // namespace fastattn

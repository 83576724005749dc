// Device-side element access for the element-wise CUDA kernels (norm, activations, bias,
// embedding): float32 / float16 / bfloat16 storage read into float32 registers and written back
// with one round-to-nearest-even, in vectors of up to 16 bytes per memory instruction.
//
// 16-bit floats are handled as their bit patterns (uint16_t), converted with the intrinsics of
// <cuda_fp16.h> / <cuda_bf16.h>, which compile for every target down to sm_70 (CUDA 11.8);
// arithmetic is always float32.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "fastattn/core/dtype.h"

namespace fastattn::kernels::cuda {

// Element traits: Raw is the storage type; load widens to float, store rounds to nearest even.
struct F32 {
  using Raw = float;
  static __device__ __forceinline__ float load(Raw r) { return r; }
  static __device__ __forceinline__ Raw store(float f) { return f; }
};
struct F16 {
  using Raw = uint16_t;
  static __device__ __forceinline__ float load(Raw r) { return __half2float(__ushort_as_half(r)); }
  static __device__ __forceinline__ Raw store(float f) {
    return __half_as_ushort(__float2half_rn(f));
  }
};
struct BF16 {
  using Raw = uint16_t;
  static __device__ __forceinline__ float load(Raw r) {
    return __uint_as_float(static_cast<uint32_t>(r) << 16);
  }
  // Round to nearest even (NaN stays NaN). CUDA 11.8 has the bf16 intrinsics for sm_80+ only;
  // the integer form gives identical results everywhere.
  static __device__ __forceinline__ Raw store(float f) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    return __bfloat16_as_ushort(__float2bfloat16_rn(f));
#else
    uint32_t u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<Raw>((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return static_cast<Raw>(u >> 16);
#endif
  }
};

// Memory word of `Bytes` bytes for one vector access (Bytes = 2, 4, 8 or 16).
template <int Bytes>
struct Word;
template <>
struct Word<2> {
  using T = uint16_t;
};
template <>
struct Word<4> {
  using T = uint32_t;
};
template <>
struct Word<8> {
  using T = uint2;
};
template <>
struct Word<16> {
  using T = uint4;
};

// f[0, N) = elements p[0, N) widened. p must be aligned to min(16, N * sizeof(Raw)) bytes; wider
// vectors are read as several 16-byte words.
template <class E, int N>
__device__ __forceinline__ void load_vec(const typename E::Raw* p, float (&f)[N]) {
  using Raw = typename E::Raw;
  constexpr int kBytes = N * static_cast<int>(sizeof(Raw));
  constexpr int kWordBytes = kBytes < 16 ? kBytes : 16;
  constexpr int kPerWord = kWordBytes / static_cast<int>(sizeof(Raw));
  using W = typename Word<kWordBytes>::T;
  const W* src = reinterpret_cast<const W*>(p);
#pragma unroll
  for (int w = 0; w < N / kPerWord; ++w) {
    const W word = src[w];
    Raw r[kPerWord];
    memcpy(r, &word, kWordBytes);
#pragma unroll
    for (int j = 0; j < kPerWord; ++j) f[w * kPerWord + j] = E::load(r[j]);
  }
}

// p[0, N) = f[0, N) rounded to E (same alignment rule as load_vec).
template <class E, int N>
__device__ __forceinline__ void store_vec(typename E::Raw* p, const float (&f)[N]) {
  using Raw = typename E::Raw;
  constexpr int kBytes = N * static_cast<int>(sizeof(Raw));
  constexpr int kWordBytes = kBytes < 16 ? kBytes : 16;
  constexpr int kPerWord = kWordBytes / static_cast<int>(sizeof(Raw));
  using W = typename Word<kWordBytes>::T;
  W* dst = reinterpret_cast<W*>(p);
#pragma unroll
  for (int w = 0; w < N / kPerWord; ++w) {
    Raw r[kPerWord];
#pragma unroll
    for (int j = 0; j < kPerWord; ++j) r[j] = E::store(f[w * kPerWord + j]);
    W word;
    memcpy(&word, r, kWordBytes);
    dst[w] = word;
  }
}

// Vector of N elements at element offset i of a float array whose dtype is known only at run
// time (weights, biases): one warp-uniform branch per vector.
template <int N>
__device__ __forceinline__ void load_vec_any(const void* base, DType dt, int64_t i, float (&f)[N]) {
  switch (dt) {
    case DType::kFloat16:
      load_vec<F16, N>(static_cast<const uint16_t*>(base) + i, f);
      break;
    case DType::kBFloat16:
      load_vec<BF16, N>(static_cast<const uint16_t*>(base) + i, f);
      break;
    default:
      load_vec<F32, N>(static_cast<const float*>(base) + i, f);
      break;
  }
}

// Element i of a float array whose dtype is known only at run time (a warp-uniform branch).
__device__ __forceinline__ float load_elem_any(const void* base, DType dt, int64_t i) {
  switch (dt) {
    case DType::kFloat16:
      return F16::load(static_cast<const uint16_t*>(base)[i]);
    case DType::kBFloat16:
      return BF16::load(static_cast<const uint16_t*>(base)[i]);
    default:
      return static_cast<const float*>(base)[i];
  }
}

__device__ __forceinline__ void store_elem_any(void* base, DType dt, int64_t i, float v) {
  switch (dt) {
    case DType::kFloat16:
      static_cast<uint16_t*>(base)[i] = F16::store(v);
      break;
    case DType::kBFloat16:
      static_cast<uint16_t*>(base)[i] = BF16::store(v);
      break;
    default:
      static_cast<float*>(base)[i] = v;
      break;
  }
}

// v rounded to dtype dt and widened back: what a store to dt followed by a load gives.
__device__ __forceinline__ float round_to_dtype(DType dt, float v) {
  switch (dt) {
    case DType::kFloat16:
      return F16::load(F16::store(v));
    case DType::kBFloat16:
      return BF16::load(BF16::store(v));
    default:
      return v;
  }
}

// Numerically safe logistic function: exp never overflows, so the far negative side underflows
// gracefully instead of dividing by infinity.
__device__ __forceinline__ float sigmoid_f(float v) {
  const float e = expf(-fabsf(v));
  return (v >= 0.0f ? 1.0f : e) / (1.0f + e);
}

// Sum over the warp; every lane gets the result.
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the result.
// `scratch` holds 32 floats of shared memory; calls may follow each other directly.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
  v = warp_sum(v);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();  // the previous call's readers are done with scratch
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  const int warps = static_cast<int>(blockDim.x >> 5);
  return warp_sum(lane < warps ? scratch[lane] : 0.0f);
}

// Host-side dispatch shared by the element-wise launchers: calls f(E{}, std::integral_constant<
// int, N>{}) with E the element traits of `dtype` (float16, bfloat16, else float32) and N the
// 16-byte vector width when `vec` equals it, else 1 (the scalar path).
template <class F>
void dispatch_dtype_vec(DType dtype, int vec, F&& f) {
  auto by_width = [&](auto elem) {
    using E = decltype(elem);
    constexpr int kVec = 16 / static_cast<int>(sizeof(typename E::Raw));
    if (vec == kVec) {
      f(E{}, std::integral_constant<int, kVec>{});
    } else {
      f(E{}, std::integral_constant<int, 1>{});
    }
  };
  switch (dtype) {
    case DType::kFloat16:
      return by_width(F16{});
    case DType::kBFloat16:
      return by_width(BF16{});
    default:
      return by_width(F32{});
  }
}

}  // namespace fastattn::kernels::cuda

// Pieces of the split-KV decode kernels: 16-byte element <-> float conversions for fp16 / bf16 /
// fp32 storage, and the tile geometry (DecodeTraits) shared by the kernel and its host launcher.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <type_traits>

namespace fastattn::kernels::cuda::decode {

// ---------------------------------------------------------------------------------------------
// Vector loads / stores of kBytes (4, 8 or a multiple of 16) as 32-bit words, and their
// conversions.

template <int kBytes>
__device__ __forceinline__ void load_words(const void* src, uint32_t (&w)[kBytes / 4]) {
  static_assert(kBytes == 4 || kBytes == 8 || kBytes % 16 == 0, "vector width");
  if constexpr (kBytes == 4) {
    w[0] = *static_cast<const uint32_t*>(src);
  } else if constexpr (kBytes == 8) {
    const uint2 v = *static_cast<const uint2*>(src);
    w[0] = v.x;
    w[1] = v.y;
  } else {
#pragma unroll
    for (int i = 0; i < kBytes / 16; ++i) {
      const uint4 v = static_cast<const uint4*>(src)[i];
      w[4 * i] = v.x;
      w[4 * i + 1] = v.y;
      w[4 * i + 2] = v.z;
      w[4 * i + 3] = v.w;
    }
  }
}

template <int kBytes>
__device__ __forceinline__ void store_words(void* dst, const uint32_t (&w)[kBytes / 4]) {
  static_assert(kBytes == 4 || kBytes == 8 || kBytes % 16 == 0, "vector width");
  if constexpr (kBytes == 4) {
    *static_cast<uint32_t*>(dst) = w[0];
  } else if constexpr (kBytes == 8) {
    *static_cast<uint2*>(dst) = make_uint2(w[0], w[1]);
  } else {
#pragma unroll
    for (int i = 0; i < kBytes / 16; ++i) {
      static_cast<uint4*>(dst)[i] = make_uint4(w[4 * i], w[4 * i + 1], w[4 * i + 2], w[4 * i + 3]);
    }
  }
}

// Two 16-bit values (or one fp32) of a word as floats.
template <typename Element>
__device__ __forceinline__ void word_to_float(uint32_t w, float* f);

template <>
__device__ __forceinline__ void word_to_float<__half>(uint32_t w, float* f) {
  __half2 h;
  memcpy(&h, &w, 4);
  const float2 v = __half22float2(h);
  f[0] = v.x;
  f[1] = v.y;
}

template <>
__device__ __forceinline__ void word_to_float<__nv_bfloat16>(uint32_t w, float* f) {
  f[0] = __uint_as_float(w << 16);  // bf16 is the top half of an fp32: exact
  f[1] = __uint_as_float(w & 0xffff0000u);
}

template <>
__device__ __forceinline__ void word_to_float<float>(uint32_t w, float* f) {
  f[0] = __uint_as_float(w);
}

template <typename Element>
__device__ __forceinline__ uint32_t float_to_word(const float* f);

template <>
__device__ __forceinline__ uint32_t float_to_word<__half>(const float* f) {
  const __half2 h = __floats2half2_rn(f[0], f[1]);
  uint32_t w;
  memcpy(&w, &h, 4);
  return w;
}

template <>
__device__ __forceinline__ uint32_t float_to_word<__nv_bfloat16>(const float* f) {
  const __nv_bfloat16 lo = __float2bfloat16_rn(f[0]);
  const __nv_bfloat16 hi = __float2bfloat16_rn(f[1]);
  uint16_t l, h;
  memcpy(&l, &lo, 2);
  memcpy(&h, &hi, 2);
  return static_cast<uint32_t>(l) | (static_cast<uint32_t>(h) << 16);
}

template <>
__device__ __forceinline__ uint32_t float_to_word<float>(const float* f) {
  return __float_as_uint(f[0]);
}

template <typename Element>
constexpr int kElemsPerWord = 4 / static_cast<int>(sizeof(Element));

// N consecutive elements at src (N * sizeof(Element) bytes, aligned to that or 16) as floats.
template <typename Element, int N>
__device__ __forceinline__ void load_as_float(const Element* src, float (&f)[N]) {
  constexpr int kBytes = N * static_cast<int>(sizeof(Element));
  uint32_t w[kBytes / 4];
  load_words<kBytes>(src, w);
#pragma unroll
  for (int i = 0; i < kBytes / 4; ++i) word_to_float<Element>(w[i], f + i * kElemsPerWord<Element>);
}

// N floats stored as N consecutive elements at dst (rounded to nearest even).
template <typename Element, int N>
__device__ __forceinline__ void store_from_float(Element* dst, const float (&f)[N]) {
  constexpr int kBytes = N * static_cast<int>(sizeof(Element));
  uint32_t w[kBytes / 4];
#pragma unroll
  for (int i = 0; i < kBytes / 4; ++i)
    w[i] = float_to_word<Element>(f + i * kElemsPerWord<Element>);
  store_words<kBytes>(dst, w);
}

// N floats (1, 2 or a multiple of 4: the decode kernel's row tiles) from / to memory aligned to
// their size, in load_words' / store_words' vectors.
template <int N>
__device__ __forceinline__ void load_floats(const float* src, float (&f)[N]) {
  uint32_t w[N];
  load_words<4 * N>(src, w);
#pragma unroll
  for (int i = 0; i < N; ++i) f[i] = __uint_as_float(w[i]);
}

template <int N>
__device__ __forceinline__ void store_floats(float* dst, const float (&f)[N]) {
  uint32_t w[N];
#pragma unroll
  for (int i = 0; i < N; ++i) w[i] = __float_as_uint(f[i]);
  store_words<4 * N>(dst, w);
}

// ---------------------------------------------------------------------------------------------
// Tile geometry.
//
// A CTA (4 warps) owns kRows "rows" = (query token, query head) pairs of one sequence and one KV
// head (the heads of a GQA group are consecutive rows, so one K/V load serves all of them) and
// one split of that sequence's visible key range, walked in tiles of kBlockN keys. Each warp
// takes its own kKeysPerWarp keys of a tile and keeps its own online-softmax state (max, sum,
// O accumulator): no CTA-wide reduction in the loop; the four warps are merged once at the end.
//
// Inside a warp, lane = j + kKeysPerWarp * part: key j of the warp's keys, and a part of the head
// dim (16-byte chunks c = i * kLanesPerKey + part). Q K^T: each lane dots its chunks of K row j
// with the (pre-scaled, fp32) query rows read from shared memory as broadcasts, then the parts are
// summed with shuffles. P V: lane owns kPiece consecutive head-dim columns and walks the warp's
// keys, with P read from a small per-warp shared tile as broadcasts.
//
// K / V tiles live in shared memory with rows of D elements plus one 16-byte pad chunk, i.e. an
// odd number of 16-byte chunks per row: the 8 lanes of a 16-byte load phase read 8 different
// rows at one chunk index, which the odd row pitch spreads over all 8 bank groups.
// The largest power of two <= fit in [2, 32], raised until 32 / it divides `chunks`.
constexpr int keys_per_warp(int fit, int chunks) {
  int kw = 32;
  while (kw > 2 && kw > fit) kw /= 2;
  while (kw < 32 && chunks % (32 / kw) != 0) kw *= 2;
  return kw;
}

template <typename Element_, int kHeadDim_, int kRows_, int kStages_>
struct DecodeTraits {
  using Element = Element_;
  static constexpr int kHeadDim = kHeadDim_;
  static constexpr int kRows = kRows_;
  static constexpr int kStages = kStages_;  // shared-memory K / V stages
  static constexpr int kWarps = 4;
  static constexpr int kThreads = kWarps * 32;
  static constexpr int kElemBytes = static_cast<int>(sizeof(Element));
  static constexpr int kChunkElems = 16 / kElemBytes;  // elements per 16-byte chunk
  static constexpr int kChunks = kHeadDim / kChunkElems;
  static constexpr int kRowElems = kHeadDim + kChunkElems;  // padded shared-memory row
  // Keys per warp per tile: about 16 KB of K + V per tile (so 4 CTAs fit an H100 SM with either
  // copy path), 2..32 keys per warp, and a key's lanes must split the head-dim chunks evenly.
  static constexpr int kKeyBytes = 2 * kHeadDim * kElemBytes;
  static constexpr int kTileBytes = 16384;
  static constexpr int kKeysPerWarp = keys_per_warp(kTileBytes / (kWarps * kKeyBytes), kChunks);
  static constexpr int kLanesPerKey = 32 / kKeysPerWarp;
  static constexpr int kChunksPerLane = kChunks / kLanesPerKey;
  static constexpr int kBlockN = kWarps * kKeysPerWarp;
  // P V: head-dim columns per lane, a power of two (D = 80 / 96 leave lanes idle: 20 / 24 active).
  static constexpr int kPiece =
      kHeadDim == 64 || kHeadDim == 128 || kHeadDim == 256 ? kHeadDim / 32 : 4;
  static constexpr int kPvLanes = kHeadDim / kPiece;
  static constexpr int kQStride = kHeadDim + 4;  // floats per shared query row
  // Global -> shared copies: 16-byte chunks of one K (and one V) tile per thread.
  static constexpr int kTileChunks = kBlockN * kChunks;
  static constexpr int kLoadIters = (kTileChunks + kThreads - 1) / kThreads;

  static_assert(kHeadDim % kChunkElems == 0 && kChunks % 2 == 0,
                "head dim: whole, even chunk count");
  static_assert(kChunks % kLanesPerKey == 0, "head-dim chunks split evenly over a key's lanes");
  static_assert(kHeadDim % kPiece == 0 && kPvLanes <= 32, "P V column pieces");
  static_assert(kPiece * kElemBytes % 4 == 0, "P V pieces are whole 32-bit words");
  static_assert(kRows == 1 || kRows == 2 || kRows % 4 == 0,
                "rows: 1, 2 or float4 groups (P and the merge state are read as vectors)");

  // Shared memory (bytes): K / V stages, then the query rows, P, the per-row mask info and the
  // per-warp softmax state. The final merge of the four warps reuses the K / V area.
  static constexpr size_t kKvBytes = size_t{2} * kStages * kBlockN * kRowElems * kElemBytes;
  static constexpr size_t kMergeBytes = size_t{4} * kRows * kHeadDim;
  static constexpr size_t kKvArea = kKvBytes > kMergeBytes ? kKvBytes : kMergeBytes;
  static constexpr size_t kQOffset = kKvArea;
  static constexpr size_t kPOffset = kQOffset + size_t{4} * kRows * kQStride;
  static constexpr size_t kRowInfoOffset = kPOffset + size_t{4} * kWarps * kKeysPerWarp * kRows;
  static constexpr size_t kStateOffset = kRowInfoOffset + size_t{8} * kRows;
  static constexpr size_t kSmemBytes = kStateOffset + size_t{8} * kWarps * kRows;
};

}  // namespace fastattn::kernels::cuda::decode

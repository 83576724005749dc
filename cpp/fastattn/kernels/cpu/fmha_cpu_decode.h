// Streaming inner loops of the narrow (decode) attention tile on AVX2 + FMA + F16C, used by
// fmha_cpu_narrow.cc when the head dim is a multiple of 8 (otherwise, and on CPUs without these
// extensions, the narrow kernel keeps its portable V16 loops). Decode reads every K and V row
// once, so these loops must not cost more than the memory does:
//   - K and V rows are read in their stored dtype (fp32, fp16 or bf16) and widened in registers
//     (vcvtph2ps; bf16 by a 16-bit shift): no float32 copy of the tile is written and re-read;
//   - scores of ROWS query rows x KJ keys (ROWS x KJ <= 8 accumulators) are reduced with a hadd
//     tree, not one horizontal sum per (row, key);
//   - the softmax's 2^x is a vectorised polynomial (simd::exp2_8);
//   - row pointers come from one walk of the block table per tile (tile_rows), not a division
//     per row and per use.
// The same code serves AVX-512 builds (which include AVX2); memory, not the vector width, bounds
// decode.
#pragma once

#include <cstdint>

#include "fastattn/core/dtype.h"

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#define FASTATTN_DECODE_AVX2 1
// As in fmha_simd.h: GCC 12 flags its own AVX-512 intrinsics' _mm512_undefined_*() pass-through
// operands as (maybe-)uninitialized inside the header; whichever file includes it first must
// silence that.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop
#endif

namespace fastattn::kernels::cpu::decode {

#if defined(FASTATTN_DECODE_AVX2)

// 8 KV elements at p, widened to float.
template <DType T>
inline __m256 load8(const char* p) {
  if constexpr (T == DType::kFloat32) {
    return _mm256_loadu_ps(reinterpret_cast<const float*>(p));
  } else if constexpr (T == DType::kFloat16) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  } else {
    const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
  }
}

template <DType T>
constexpr int elem_bytes() {
  return T == DType::kFloat32 ? 4 : 2;
}

// Sum of each of 8 vectors, as the 8 lanes of one vector (lane i = sum of v[i]).
inline __m256 hsum8(const __m256* v) {
  const __m256 a = _mm256_hadd_ps(v[0], v[1]);
  const __m256 b = _mm256_hadd_ps(v[2], v[3]);
  const __m256 c = _mm256_hadd_ps(v[4], v[5]);
  const __m256 d = _mm256_hadd_ps(v[6], v[7]);
  const __m256 ab = _mm256_hadd_ps(a, b);  // lanes: v0 v1 v2 v3 (low half) | v0 v1 v2 v3 (high)
  const __m256 cd = _mm256_hadd_ps(c, d);
  const __m256 lo = _mm256_permute2f128_ps(ab, cd, 0x20);
  const __m256 hi = _mm256_permute2f128_ps(ab, cd, 0x31);
  return _mm256_add_ps(lo, hi);
}

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// s[r * kv_tile + j] = dot(q_r, K[j]) for rows r < ROWS (q: [ROWS][dp] floats, already scaled)
// and the tile's n keys (row pointers kp). head_dim % 8 == 0.
template <DType T, int ROWS>
inline void qk_tile(const char* const* kp, int n, const float* q, int dp, int head_dim, float* s,
                    int kv_tile) {
  constexpr int KJ = ROWS == 1 ? 8 : ROWS == 2 ? 4 : ROWS <= 4 ? 2 : 1;
  constexpr int EB = elem_bytes<T>();
  int j = 0;
  for (; j + KJ <= n; j += KJ) {
    __m256 acc[KJ * ROWS];
#pragma GCC unroll 8
    for (int i = 0; i < KJ * ROWS; ++i) acc[i] = _mm256_setzero_ps();
    for (int d = 0; d < head_dim; d += 8) {
      __m256 qv[ROWS];
#pragma GCC unroll 8
      for (int r = 0; r < ROWS; ++r) qv[r] = _mm256_loadu_ps(q + r * dp + d);
#pragma GCC unroll 8
      for (int k = 0; k < KJ; ++k) {
        const __m256 kv = load8<T>(kp[j + k] + d * EB);
#pragma GCC unroll 8
        for (int r = 0; r < ROWS; ++r)
          acc[k * ROWS + r] = _mm256_fmadd_ps(qv[r], kv, acc[k * ROWS + r]);
      }
    }
    if constexpr (KJ * ROWS == 8) {
      alignas(32) float sums[8];
      _mm256_store_ps(sums, hsum8(acc));
#pragma GCC unroll 8
      for (int k = 0; k < KJ; ++k)
#pragma GCC unroll 8
        for (int r = 0; r < ROWS; ++r) s[r * kv_tile + j + k] = sums[k * ROWS + r];
    } else {
#pragma GCC unroll 8
      for (int k = 0; k < KJ; ++k)
#pragma GCC unroll 8
        for (int r = 0; r < ROWS; ++r) s[r * kv_tile + j + k] = hsum(acc[k * ROWS + r]);
    }
  }
  for (; j < n; ++j) {
    __m256 acc[ROWS];
#pragma GCC unroll 8
    for (int r = 0; r < ROWS; ++r) acc[r] = _mm256_setzero_ps();
    for (int d = 0; d < head_dim; d += 8) {
      const __m256 kv = load8<T>(kp[j] + d * EB);
#pragma GCC unroll 8
      for (int r = 0; r < ROWS; ++r)
        acc[r] = _mm256_fmadd_ps(_mm256_loadu_ps(q + r * dp + d), kv, acc[r]);
    }
#pragma GCC unroll 8
    for (int r = 0; r < ROWS; ++r) s[r * kv_tile + j] = hsum(acc[r]);
  }
}

// o[r][d0 .. d0 + 8C) = alpha_r * o + sum_j p[r][j] * V[j][d0 ..] for one group of C 8-float
// chunks.
template <DType T, int ROWS, int C>
inline void pv_chunks(const char* const* vp, int n, const float* p, int kv_tile, const float* alpha,
                      int d0, int dp, float* o) {
  constexpr int EB = elem_bytes<T>();
  __m256 acc[ROWS][C];
#pragma GCC unroll 8
  for (int r = 0; r < ROWS; ++r) {
    const __m256 al = _mm256_set1_ps(alpha[r]);
#pragma GCC unroll 8
    for (int c = 0; c < C; ++c)
      acc[r][c] = _mm256_mul_ps(_mm256_loadu_ps(o + r * dp + d0 + 8 * c), al);
  }
  for (int j = 0; j < n; ++j) {
    __m256 v[C];
#pragma GCC unroll 8
    for (int c = 0; c < C; ++c) v[c] = load8<T>(vp[j] + (d0 + 8 * c) * EB);
#pragma GCC unroll 8
    for (int r = 0; r < ROWS; ++r) {
      const __m256 pb = _mm256_broadcast_ss(p + r * kv_tile + j);
#pragma GCC unroll 8
      for (int c = 0; c < C; ++c) acc[r][c] = _mm256_fmadd_ps(pb, v[c], acc[r][c]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < ROWS; ++r)
#pragma GCC unroll 8
    for (int c = 0; c < C; ++c) _mm256_storeu_ps(o + r * dp + d0 + 8 * c, acc[r][c]);
}

// The whole P V update of a tile for ROWS rows; head_dim % 8 == 0. Chunk groups hold
// ROWS x C <= 8..12 accumulators.
template <DType T, int ROWS>
inline void pv_tile(const char* const* vp, int n, const float* p, int kv_tile, const float* alpha,
                    int head_dim, int dp, float* o) {
  constexpr int CMAX = ROWS == 1 ? 8 : ROWS == 2 ? 4 : ROWS <= 4 ? 2 : 1;
  const int chunks = head_dim / 8;
  int c0 = 0;
  for (; c0 + CMAX <= chunks; c0 += CMAX)
    pv_chunks<T, ROWS, CMAX>(vp, n, p, kv_tile, alpha, 8 * c0, dp, o);
  for (; c0 < chunks; ++c0) pv_chunks<T, ROWS, 1>(vp, n, p, kv_tile, alpha, 8 * c0, dp, o);
}

#endif  // FASTATTN_DECODE_AVX2

}  // namespace fastattn::kernels::cpu::decode

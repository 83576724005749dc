// A 16-lane float vector for the CPU attention kernel: AVX-512 intrinsics where the build targets
// AVX-512, two AVX2 registers where it targets AVX2 + FMA, otherwise plain 16-element loops. The
// attention code is written once against this type.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>

#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
// GCC 12 reports its own _mm512_undefined_ps() pass-through operands (inside the intrinsics
// header) as (maybe-)uninitialized; the warning is located in the header, so silence it there.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop
#define FASTATTN_SIMD_AVX2 1  // the 8-lane helpers below (also in AVX-512 builds)
#endif

namespace fastattn::kernels::cpu::simd {

constexpr int kLanes = 16;

// Exponent floor for exp2: 2^-160 rounds to zero in float, so -inf (a masked score) maps to 0
// without a NaN from (-inf) - round(-inf). The clamp lets NaN through (a NaN score from NaN or
// inf inputs must give a NaN output, as the reference does, not a zero weight).
constexpr float kExp2Floor = -160.0f;

// Taylor coefficients of 2^f = e^(f ln2) for |f| <= 0.5, degree 7: relative error < 1e-8,
// below float's half-ulp.
constexpr float kExp2C1 = 0.693147180559945f;
constexpr float kExp2C2 = 0.240226506959101f;
constexpr float kExp2C3 = 0.0555041086648216f;
constexpr float kExp2C4 = 0.00961812910762848f;
constexpr float kExp2C5 = 0.00133335581464284f;
constexpr float kExp2C6 = 0.000154035303933816f;
constexpr float kExp2C7 = 1.52527338040598e-05f;

#if defined(FASTATTN_SIMD_AVX2)

// 2^x on 8 lanes, the algorithm of the AVX-512 exp2 below: x clamped at kExp2Floor (-inf
// included gives 0; max_ps returns its second operand when either is NaN, so NaN stays NaN),
// rounded to nearest, the degree-7 polynomial on [-0.5, 0.5], then 2^n applied as two exact
// power-of-two factors 2^(n/2) * 2^(n - n/2): AVX2 has no scalef, and a single exponent add
// would leave the normal range below -126 instead of giving denormals / zero.
inline __m256 exp2_8(__m256 x) {
  x = _mm256_max_ps(_mm256_set1_ps(kExp2Floor), x);
  const __m256 n = _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m256 f = _mm256_sub_ps(x, n);
  __m256 p = _mm256_set1_ps(kExp2C7);
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(kExp2C6));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(kExp2C5));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(kExp2C4));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(kExp2C3));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(kExp2C2));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(kExp2C1));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.0f));
  const __m256i ni = _mm256_cvtps_epi32(n);  // NaN lanes: p is NaN, whatever the factors
  const __m256i h = _mm256_srai_epi32(ni, 1);
  const __m256i e1 = _mm256_slli_epi32(_mm256_add_epi32(h, _mm256_set1_epi32(127)), 23);
  const __m256i e2 =
      _mm256_slli_epi32(_mm256_add_epi32(_mm256_sub_epi32(ni, h), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(_mm256_mul_ps(p, _mm256_castsi256_ps(e1)), _mm256_castsi256_ps(e2));
}

// dst[c][r] = src[r][c] * scale for an 8 x 8 block (strides in floats).
inline void transpose8(const float* src, int64_t src_stride, float* dst, int64_t dst_stride,
                       float scale) {
  __m256 r[8], t[8];
  for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(src + i * src_stride);
  for (int i = 0; i < 4; ++i) {
    t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 2; ++i) {
    r[4 * i] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
    r[4 * i + 1] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0xEE);
    r[4 * i + 2] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
    r[4 * i + 3] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xEE);
  }
  // r[c] (c < 4): column c of rows 0-3 in its low half, column c + 4 in its high half; r[c + 4]
  // the same for rows 4-7. Output row c takes the two low halves, row c + 4 the two high ones.
  const __m256 sv = _mm256_set1_ps(scale);
  for (int i = 0; i < 4; ++i) {
    _mm256_storeu_ps(dst + i * dst_stride,
                     _mm256_mul_ps(_mm256_permute2f128_ps(r[i], r[i + 4], 0x20), sv));
    _mm256_storeu_ps(dst + (i + 4) * dst_stride,
                     _mm256_mul_ps(_mm256_permute2f128_ps(r[i], r[i + 4], 0x31), sv));
  }
}

#endif  // FASTATTN_SIMD_AVX2

#if defined(__AVX512F__)

struct V16 {
  __m512 v;
};

inline V16 load(const float* p) { return {_mm512_loadu_ps(p)}; }
// Keeps a loaded value in a register: stops the compiler from folding the load into each of the
// FMAs that use it (which would re-read it once per use and saturate the load ports).
inline void pin(V16& a) { asm("" : "+v"(a.v)); }
// Loads the first n (< 16) lanes, zeros the rest.
inline V16 load_first(const float* p, int n) {
  return {_mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << n) - 1u), p)};
}
inline void store(float* p, V16 a) { _mm512_storeu_ps(p, a.v); }
inline void store_first(float* p, V16 a, int n) {
  _mm512_mask_storeu_ps(p, static_cast<__mmask16>((1u << n) - 1u), a.v);
}
inline V16 splat(float x) { return {_mm512_set1_ps(x)}; }
inline V16 add(V16 a, V16 b) { return {_mm512_add_ps(a.v, b.v)}; }
inline V16 sub(V16 a, V16 b) { return {_mm512_sub_ps(a.v, b.v)}; }
inline V16 mul(V16 a, V16 b) { return {_mm512_mul_ps(a.v, b.v)}; }
inline V16 max(V16 a, V16 b) { return {_mm512_max_ps(a.v, b.v)}; }
// a * b + c
inline V16 fma(V16 a, V16 b, V16 c) { return {_mm512_fmadd_ps(a.v, b.v, c.v)}; }
inline float reduce_add(V16 a) { return _mm512_reduce_add_ps(a.v); }
inline float reduce_max(V16 a) { return _mm512_reduce_max_ps(a.v); }
// Lanes where a == -inf become 0 (the online-softmax guard for rows that have seen no key yet).
inline V16 zero_if_neg_inf(V16 a) {
  const __mmask16 inf = _mm512_cmp_ps_mask(a.v, _mm512_set1_ps(-INFINITY), _CMP_EQ_OQ);
  return {_mm512_mask_mov_ps(a.v, inf, _mm512_setzero_ps())};
}

// 2^x for x <= ~128; -inf (and anything below kExp2Floor) gives 0, NaN gives NaN.
inline V16 exp2(V16 x) {
  // max_ps returns its second operand when either is NaN: x, so NaN survives the clamp.
  const __m512 xc = _mm512_max_ps(_mm512_set1_ps(kExp2Floor), x.v);
  const __m512 n = _mm512_roundscale_ps(xc, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m512 f = _mm512_sub_ps(xc, n);
  __m512 p = _mm512_set1_ps(kExp2C7);
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(kExp2C6));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(kExp2C5));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(kExp2C4));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(kExp2C3));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(kExp2C2));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(kExp2C1));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f));
  return {_mm512_scalef_ps(p, n)};
}

// Lanes whose key index j lies outside [lo, hi] (per-lane int32 bounds) become -inf.
inline V16 mask_outside(V16 s, const int32_t* lo, const int32_t* hi, int32_t j) {
  const __m512i jv = _mm512_set1_epi32(j);
  const __mmask16 below = _mm512_cmpgt_epi32_mask(_mm512_loadu_si512(lo), jv);
  const __mmask16 above = _mm512_cmpgt_epi32_mask(jv, _mm512_loadu_si512(hi));
  return {_mm512_mask_mov_ps(s.v, below | above, _mm512_set1_ps(-INFINITY))};
}

// s - slope * |pos - j| per lane (ALiBi; slope already in the log2 domain).
inline V16 add_alibi(V16 s, const float* slope, const int32_t* pos, int32_t j) {
  const __m512i d =
      _mm512_abs_epi32(_mm512_sub_epi32(_mm512_loadu_si512(pos), _mm512_set1_epi32(j)));
  return {_mm512_fnmadd_ps(_mm512_loadu_ps(slope), _mm512_cvtepi32_ps(d), s.v)};
}

// dst[c][r] = src[r][c] * scale for a 16 x 16 block (strides in floats).
inline void transpose16(const float* src, int64_t src_stride, float* dst, int64_t dst_stride,
                        float scale) {
  __m512 r[16], t[16];
  for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_ps(src + i * src_stride);
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 4; ++i) {
    r[4 * i] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
    r[4 * i + 1] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0xEE);
    r[4 * i + 2] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
    r[4 * i + 3] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xEE);
  }
  for (int h = 0; h < 2; ++h) {
    for (int i = 0; i < 4; ++i) {
      t[8 * h + i] = _mm512_shuffle_f32x4(r[8 * h + i], r[8 * h + i + 4], 0x88);
      t[8 * h + i + 4] = _mm512_shuffle_f32x4(r[8 * h + i], r[8 * h + i + 4], 0xDD);
    }
  }
  const __m512 sv = _mm512_set1_ps(scale);
  for (int i = 0; i < 8; ++i) {
    _mm512_storeu_ps(dst + i * dst_stride,
                     _mm512_mul_ps(_mm512_shuffle_f32x4(t[i], t[i + 8], 0x88), sv));
    _mm512_storeu_ps(dst + (i + 8) * dst_stride,
                     _mm512_mul_ps(_mm512_shuffle_f32x4(t[i], t[i + 8], 0xDD), sv));
  }
}

#elif defined(FASTATTN_SIMD_AVX2)

// 16 lanes as two AVX2 registers. Every operation keeps the AVX-512 path's semantics (NaN
// propagation of max and exp2 included), so both builds compute the same values.
struct V16 {
  __m256 lo, hi;
};

inline V16 load(const float* p) { return {_mm256_loadu_ps(p), _mm256_loadu_ps(p + 8)}; }
inline void pin(V16& a) { asm("" : "+x"(a.lo), "+x"(a.hi)); }
// Lane i < n of an 8-lane block starting at lane `first`: all-ones, else zero.
inline __m256i first_mask8(int n, int first) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(n - first),
                            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
inline V16 load_first(const float* p, int n) {
  return {_mm256_maskload_ps(p, first_mask8(n, 0)), _mm256_maskload_ps(p + 8, first_mask8(n, 8))};
}
inline void store(float* p, V16 a) {
  _mm256_storeu_ps(p, a.lo);
  _mm256_storeu_ps(p + 8, a.hi);
}
inline void store_first(float* p, V16 a, int n) {
  _mm256_maskstore_ps(p, first_mask8(n, 0), a.lo);
  _mm256_maskstore_ps(p + 8, first_mask8(n, 8), a.hi);
}
inline V16 splat(float x) {
  const __m256 v = _mm256_set1_ps(x);
  return {v, v};
}
inline V16 add(V16 a, V16 b) { return {_mm256_add_ps(a.lo, b.lo), _mm256_add_ps(a.hi, b.hi)}; }
inline V16 sub(V16 a, V16 b) { return {_mm256_sub_ps(a.lo, b.lo), _mm256_sub_ps(a.hi, b.hi)}; }
inline V16 mul(V16 a, V16 b) { return {_mm256_mul_ps(a.lo, b.lo), _mm256_mul_ps(a.hi, b.hi)}; }
// As _mm512_max_ps: the second operand where either is NaN.
inline V16 max(V16 a, V16 b) { return {_mm256_max_ps(a.lo, b.lo), _mm256_max_ps(a.hi, b.hi)}; }
inline V16 fma(V16 a, V16 b, V16 c) {
  return {_mm256_fmadd_ps(a.lo, b.lo, c.lo), _mm256_fmadd_ps(a.hi, b.hi, c.hi)};
}
inline float reduce_add(V16 a) {
  __m256 s = _mm256_add_ps(a.lo, a.hi);
  __m128 x = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
  x = _mm_add_ps(x, _mm_movehl_ps(x, x));
  x = _mm_add_ss(x, _mm_movehdup_ps(x));
  return _mm_cvtss_f32(x);
}
inline float reduce_max(V16 a) {
  // As the portable loop (m = a > m ? a : m from lane 0): NaN lanes are skipped unless lane 0
  // is NaN. Max reductions here only meet NaN from NaN inputs, whose rows end NaN either way.
  float v[16];
  store(v, a);
  float m = v[0];
  for (int i = 1; i < 16; ++i) m = v[i] > m ? v[i] : m;
  return m;
}
inline V16 zero_if_neg_inf(V16 a) {
  const __m256 ninf = _mm256_set1_ps(-INFINITY);
  return {_mm256_andnot_ps(_mm256_cmp_ps(a.lo, ninf, _CMP_EQ_OQ), a.lo),
          _mm256_andnot_ps(_mm256_cmp_ps(a.hi, ninf, _CMP_EQ_OQ), a.hi)};
}
inline V16 exp2(V16 x) { return {exp2_8(x.lo), exp2_8(x.hi)}; }
inline V16 mask_outside(V16 s, const int32_t* lo, const int32_t* hi, int32_t j) {
  const __m256i jv = _mm256_set1_epi32(j);
  const __m256 ninf = _mm256_set1_ps(-INFINITY);
  __m256 out[2];
  const __m256 in[2] = {s.lo, s.hi};
  for (int h = 0; h < 2; ++h) {
    const __m256i l = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(lo + 8 * h));
    const __m256i u = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(hi + 8 * h));
    const __m256i outside = _mm256_or_si256(_mm256_cmpgt_epi32(l, jv), _mm256_cmpgt_epi32(jv, u));
    out[h] = _mm256_blendv_ps(in[h], ninf, _mm256_castsi256_ps(outside));
  }
  return {out[0], out[1]};
}
inline V16 add_alibi(V16 s, const float* slope, const int32_t* pos, int32_t j) {
  const __m256i jv = _mm256_set1_epi32(j);
  __m256 out[2];
  const __m256 in[2] = {s.lo, s.hi};
  for (int h = 0; h < 2; ++h) {
    const __m256i p = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(pos + 8 * h));
    const __m256i d = _mm256_abs_epi32(_mm256_sub_epi32(p, jv));
    out[h] = _mm256_fnmadd_ps(_mm256_loadu_ps(slope + 8 * h), _mm256_cvtepi32_ps(d), in[h]);
  }
  return {out[0], out[1]};
}
inline void transpose16(const float* src, int64_t src_stride, float* dst, int64_t dst_stride,
                        float scale) {
  for (int r = 0; r < 16; r += 8)
    for (int c = 0; c < 16; c += 8)
      transpose8(src + r * src_stride + c, src_stride, dst + c * dst_stride + r, dst_stride, scale);
}

#else  // portable fallback

inline void transpose16(const float* src, int64_t src_stride, float* dst, int64_t dst_stride,
                        float scale) {
  for (int r = 0; r < 16; ++r)
    for (int c = 0; c < 16; ++c) dst[c * dst_stride + r] = src[r * src_stride + c] * scale;
}

struct V16 {
  float v[kLanes];
};

inline V16 load(const float* p) {
  V16 r;
  for (int i = 0; i < kLanes; ++i) r.v[i] = p[i];
  return r;
}
inline void pin(V16&) {}
inline V16 load_first(const float* p, int n) {
  V16 r;
  for (int i = 0; i < kLanes; ++i) r.v[i] = i < n ? p[i] : 0.0f;
  return r;
}
inline void store(float* p, V16 a) {
  for (int i = 0; i < kLanes; ++i) p[i] = a.v[i];
}
inline void store_first(float* p, V16 a, int n) {
  for (int i = 0; i < n; ++i) p[i] = a.v[i];
}
inline V16 splat(float x) {
  V16 r;
  for (int i = 0; i < kLanes; ++i) r.v[i] = x;
  return r;
}
#define FA_SIMD_BINARY(name, expr)                  \
  inline V16 name(V16 a, V16 b) {                   \
    V16 r;                                          \
    for (int i = 0; i < kLanes; ++i) r.v[i] = expr; \
    return r;                                       \
  }
FA_SIMD_BINARY(add, a.v[i] + b.v[i])
FA_SIMD_BINARY(sub, a.v[i] - b.v[i])
FA_SIMD_BINARY(mul, a.v[i] * b.v[i])
FA_SIMD_BINARY(max, a.v[i] > b.v[i] ? a.v[i] : b.v[i])
#undef FA_SIMD_BINARY
inline V16 fma(V16 a, V16 b, V16 c) {
  V16 r;
  for (int i = 0; i < kLanes; ++i) r.v[i] = std::fma(a.v[i], b.v[i], c.v[i]);
  return r;
}
inline float reduce_add(V16 a) {
  float s = 0.0f;
  for (int i = 0; i < kLanes; ++i) s += a.v[i];
  return s;
}
inline float reduce_max(V16 a) {
  float m = a.v[0];
  for (int i = 1; i < kLanes; ++i) m = a.v[i] > m ? a.v[i] : m;
  return m;
}
inline V16 zero_if_neg_inf(V16 a) {
  for (int i = 0; i < kLanes; ++i) a.v[i] = a.v[i] == -INFINITY ? 0.0f : a.v[i];
  return a;
}
inline V16 exp2(V16 x) {
  V16 r;
  for (int i = 0; i < kLanes; ++i) {
    const float xc = x.v[i] < kExp2Floor ? kExp2Floor : x.v[i];  // NaN stays NaN
    r.v[i] = std::exp2(xc);
  }
  return r;
}
inline V16 mask_outside(V16 s, const int32_t* lo, const int32_t* hi, int32_t j) {
  for (int i = 0; i < kLanes; ++i) s.v[i] = (j < lo[i] || j > hi[i]) ? -INFINITY : s.v[i];
  return s;
}
inline V16 add_alibi(V16 s, const float* slope, const int32_t* pos, int32_t j) {
  for (int i = 0; i < kLanes; ++i) {
    const int32_t d = pos[i] > j ? pos[i] - j : j - pos[i];
    s.v[i] -= slope[i] * static_cast<float>(d);
  }
  return s;
}

#endif

// dst[c][r] = src[r][c] * scale for an rows x cols block, 16 x 16 tiles at a time.
inline void transpose(const float* src, int64_t src_stride, int rows, int cols, float* dst,
                      int64_t dst_stride, float scale) {
  const int r16 = rows / 16 * 16, c16 = cols / 16 * 16;
  for (int r = 0; r < r16; r += 16)
    for (int c = 0; c < c16; c += 16)
      transpose16(src + r * src_stride + c, src_stride, dst + c * dst_stride + r, dst_stride,
                  scale);
  for (int r = 0; r < rows; ++r) {
    const int c0 = r < r16 ? c16 : 0;
    for (int c = c0; c < cols; ++c) dst[c * dst_stride + r] = src[r * src_stride + c] * scale;
  }
}

}  // namespace fastattn::kernels::cpu::simd

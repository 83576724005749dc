// The decode-regime linear kernel: y[M, N] = x[M, K] @ w[N, K]^T for small M.
//
// Batch-1 decode is bound by the bytes of weight read, so the kernel reads each weight row exactly
// once from memory: a block of kRows rows is loaded vector by vector, widened to fp32 in
// registers (F16C for float16, a 16-bit shift for bfloat16), and multiplied against up to four
// activation rows held in L1. Activation rows beyond four re-read the same weight block from L1/L2,
// not from memory. Threads split N into contiguous ranges so each streams its own part of w.
#include <algorithm>
#include <cstring>

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

// GCC 12's AVX-512 intrinsics (_mm512_cvtph_ps, _mm512_reduce_add_ps, ...) start from
// _mm512_undefined_ps(), which -Wuninitialized flags at every inlined use: a false positive.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include "fastattn/core/error.h"
#include "fastattn/kernels/cpu/linear_impl.h"

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && defined(__F16C__)
#define FA_GEMV_AVX512 1
#elif defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#define FA_GEMV_AVX2 1
#endif

namespace fastattn::kernels::cpu {
namespace {

// Activation rows handled per pass over a weight block (accumulators: kMaxRowsX * kRows).
constexpr int kMaxRowsX = 4;
// Weight rows per block: four independent streams keep the prefetchers busy and, with four
// activation rows, use 16 accumulators + 4 weight vectors of the 32 vector registers.
constexpr int kRows = 4;
// Below this many weight elements one thread is faster than forking a team.
constexpr int64_t kMinParallelWeights = 1 << 15;

#if defined(FA_GEMV_AVX512)

struct LoadF32 {
  using T = float;
  static __m512 load(const T* p) { return _mm512_loadu_ps(p); }
  static __m512 load(const T* p, __mmask16 m) { return _mm512_maskz_loadu_ps(m, p); }
};
struct LoadF16 {
  using T = uint16_t;
  static __m512 load(const T* p) {
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  }
  static __m512 load(const T* p, __mmask16 m) {
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p));
  }
};
struct LoadBF16 {
  using T = uint16_t;
  static __m512 widen(__m256i h) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  }
  static __m512 load(const T* p) {
    return widen(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  }
  static __m512 load(const T* p, __mmask16 m) { return widen(_mm256_maskz_loadu_epi16(m, p)); }
};

// y[m * ldy + r] = dot(x row m, w row r) for m < MB, r < RB; w points at the block's first row.
template <class L, int RB, int MB>
inline void dot_block(const float* x, int64_t ldx, const typename L::T* w, int64_t K, float* y,
                      int64_t ldy) {
  __m512 acc[MB][RB];
  for (int m = 0; m < MB; ++m)
    for (int r = 0; r < RB; ++r) acc[m][r] = _mm512_setzero_ps();
  int64_t k = 0;
  for (; k + 16 <= K; k += 16) {
    __m512 wv[RB];
    for (int r = 0; r < RB; ++r) wv[r] = L::load(w + r * K + k);
    for (int m = 0; m < MB; ++m) {
      const __m512 xv = _mm512_loadu_ps(x + m * ldx + k);
      for (int r = 0; r < RB; ++r) acc[m][r] = _mm512_fmadd_ps(wv[r], xv, acc[m][r]);
    }
  }
  if (k < K) {
    const __mmask16 mask = static_cast<__mmask16>((1u << (K - k)) - 1u);
    __m512 wv[RB];
    for (int r = 0; r < RB; ++r) wv[r] = L::load(w + r * K + k, mask);
    for (int m = 0; m < MB; ++m) {
      const __m512 xv = _mm512_maskz_loadu_ps(mask, x + m * ldx + k);
      for (int r = 0; r < RB; ++r) acc[m][r] = _mm512_fmadd_ps(wv[r], xv, acc[m][r]);
    }
  }
  for (int m = 0; m < MB; ++m)
    for (int r = 0; r < RB; ++r) y[m * ldy + r] = _mm512_reduce_add_ps(acc[m][r]);
}

#elif defined(FA_GEMV_AVX2)

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

struct LoadF32 {
  using T = float;
  static __m256 load(const T* p) { return _mm256_loadu_ps(p); }
  static float scalar(const T* p) { return *p; }
};
struct LoadF16 {
  using T = uint16_t;
  static __m256 load(const T* p) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
  static float scalar(const T* p) { return half_to_float(*p); }
};
struct LoadBF16 {
  using T = uint16_t;
  static __m256 load(const T* p) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  }
  static float scalar(const T* p) { return bf16_to_float(*p); }
};

template <class L, int RB, int MB>
inline void dot_block(const float* x, int64_t ldx, const typename L::T* w, int64_t K, float* y,
                      int64_t ldy) {
  __m256 acc[MB][RB];
  for (int m = 0; m < MB; ++m)
    for (int r = 0; r < RB; ++r) acc[m][r] = _mm256_setzero_ps();
  int64_t k = 0;
  for (; k + 8 <= K; k += 8) {
    __m256 wv[RB];
    for (int r = 0; r < RB; ++r) wv[r] = L::load(w + r * K + k);
    for (int m = 0; m < MB; ++m) {
      const __m256 xv = _mm256_loadu_ps(x + m * ldx + k);
      for (int r = 0; r < RB; ++r) acc[m][r] = _mm256_fmadd_ps(wv[r], xv, acc[m][r]);
    }
  }
  for (int m = 0; m < MB; ++m) {
    for (int r = 0; r < RB; ++r) {
      float s = hsum(acc[m][r]);
      for (int64_t kk = k; kk < K; ++kk) s += L::scalar(w + r * K + kk) * x[m * ldx + kk];
      y[m * ldy + r] = s;
    }
  }
}

#else  // portable scalar fallback

struct LoadF32 {
  using T = float;
  static float scalar(const T* p) { return *p; }
};
struct LoadF16 {
  using T = uint16_t;
  static float scalar(const T* p) { return half_to_float(*p); }
};
struct LoadBF16 {
  using T = uint16_t;
  static float scalar(const T* p) { return bf16_to_float(*p); }
};

template <class L, int RB, int MB>
inline void dot_block(const float* x, int64_t ldx, const typename L::T* w, int64_t K, float* y,
                      int64_t ldy) {
  float acc[MB][RB] = {};
  for (int64_t k = 0; k < K; ++k) {
    float wv[RB];
    for (int r = 0; r < RB; ++r) wv[r] = L::scalar(w + r * K + k);
    for (int m = 0; m < MB; ++m)
      for (int r = 0; r < RB; ++r) acc[m][r] += wv[r] * x[m * ldx + k];
  }
  for (int m = 0; m < MB; ++m)
    for (int r = 0; r < RB; ++r) y[m * ldy + r] = acc[m][r];
}

#endif

// All M activation rows against RB weight rows starting at row n0.
template <class L, int RB>
inline void rows_block(const LinearArgs& a, const typename L::T* w, int64_t n0) {
  const typename L::T* wb = w + n0 * a.K;
  for (int64_t m0 = 0; m0 < a.M; m0 += kMaxRowsX) {
    const float* x = a.x + m0 * a.ldx;
    float* y = a.y + m0 * a.ldy + n0;
    switch (std::min<int64_t>(kMaxRowsX, a.M - m0)) {
      case 1: dot_block<L, RB, 1>(x, a.ldx, wb, a.K, y, a.ldy); break;
      case 2: dot_block<L, RB, 2>(x, a.ldx, wb, a.K, y, a.ldy); break;
      case 3: dot_block<L, RB, 3>(x, a.ldx, wb, a.K, y, a.ldy); break;
      default: dot_block<L, RB, 4>(x, a.ldx, wb, a.K, y, a.ldy); break;
    }
  }
}

template <class L>
void gemv_typed(const LinearArgs& a, int num_threads) {
  const auto* w = static_cast<const typename L::T*>(a.w);
  const int64_t full_blocks = a.N / kRows;
  const int threads = a.N * a.K < kMinParallelWeights ? 1 : std::max(1, num_threads);
  // Static schedule: each thread streams one contiguous range of weight rows.
#pragma omp parallel num_threads(threads)
  {
#pragma omp for schedule(static) nowait
    for (int64_t b = 0; b < full_blocks; ++b) rows_block<L, kRows>(a, w, b * kRows);
#pragma omp for schedule(static) nowait
    for (int64_t n = full_blocks * kRows; n < a.N; ++n) rows_block<L, 1>(a, w, n);
  }
}

}  // namespace

void gemv_rows(const LinearArgs& a, int num_threads) {
  switch (a.w_type) {
    case DType::kFloat32: return gemv_typed<LoadF32>(a, num_threads);
    case DType::kFloat16: return gemv_typed<LoadF16>(a, num_threads);
    case DType::kBFloat16: return gemv_typed<LoadBF16>(a, num_threads);
    default: break;
  }
  FA_THROW_AS(InvalidArgument, "linear: unsupported weight dtype ", dtype_name(a.w_type));
}

const char* gemv_isa() {
#if defined(FA_GEMV_AVX512)
  return "avx512";
#elif defined(FA_GEMV_AVX2)
  return "avx2";
#else
  return "scalar";
#endif
}

}  // namespace fastattn::kernels::cpu

// The decode-regime linear kernel: y[M, N] = x[M, K] @ w[N, K]^T for small M.
//
// Batch-1 decode is bound by the bytes of weight read, so the kernel reads each weight row exactly
// once from memory: the row is loaded two vectors at a time, widened to fp32 in registers (F16C
// for float16, a 16-bit shift for bfloat16), and multiplied against up to four activation rows
// held in L1. Activation rows beyond four re-read the same weight row from L1/L2, not from memory.
// Threads split N into contiguous ranges, so each thread reads one purely sequential stream.
//
// Why one row at a time: on this class of CPU (measured on a 2-core Zen 4 VM) a single sequential
// stream per core reaches the memory roof (~22 GB/s per core, ~42 GB/s for two), while
// interleaving 4 or 8 rows (4-8 streams 3 KB apart) reached only 15-19 GB/s per core: the
// hardware prefetcher follows one stream far better than many short ones. Software prefetching
// made every variant slower.
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

// Activation rows handled per pass over a weight row (2 * kMaxRowsX accumulators).
constexpr int kMaxRowsX = 4;
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

// y[m * ldy] = dot(x row m, w) for m < MB.
template <class L, int MB>
inline void dot_row(const float* x, int64_t ldx, const typename L::T* w, int64_t K, float* y,
                    int64_t ldy) {
  __m512 acc0[MB], acc1[MB];
  for (int m = 0; m < MB; ++m) acc0[m] = acc1[m] = _mm512_setzero_ps();
  int64_t k = 0;
  for (; k + 32 <= K; k += 32) {
    const __m512 w0 = L::load(w + k), w1 = L::load(w + k + 16);
    for (int m = 0; m < MB; ++m) {
      acc0[m] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(x + m * ldx + k), acc0[m]);
      acc1[m] = _mm512_fmadd_ps(w1, _mm512_loadu_ps(x + m * ldx + k + 16), acc1[m]);
    }
  }
  if (k + 16 <= K) {
    const __m512 w0 = L::load(w + k);
    for (int m = 0; m < MB; ++m)
      acc0[m] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(x + m * ldx + k), acc0[m]);
    k += 16;
  }
  if (k < K) {
    const __mmask16 mask = static_cast<__mmask16>((1u << (K - k)) - 1u);
    const __m512 w1 = L::load(w + k, mask);
    for (int m = 0; m < MB; ++m)
      acc1[m] = _mm512_fmadd_ps(w1, _mm512_maskz_loadu_ps(mask, x + m * ldx + k), acc1[m]);
  }
  for (int m = 0; m < MB; ++m) y[m * ldy] = _mm512_reduce_add_ps(_mm512_add_ps(acc0[m], acc1[m]));
}

// Two adjacent weight rows against MB activation rows: y[m * ldy + r] for r < 2. Used when M > 1,
// where one row at a time would be bound by the activation loads (one per FMA); sharing each
// activation vector between two rows halves them. (At M = 1 the single stream wins.)
template <class L, int MB>
inline void dot_row_pair(const float* x, int64_t ldx, const typename L::T* w, int64_t K, float* y,
                         int64_t ldy) {
  __m512 acc0[MB], acc1[MB];
  for (int m = 0; m < MB; ++m) acc0[m] = acc1[m] = _mm512_setzero_ps();
  const typename L::T* w1 = w + K;
  int64_t k = 0;
  for (; k + 16 <= K; k += 16) {
    const __m512 a = L::load(w + k), b = L::load(w1 + k);
    for (int m = 0; m < MB; ++m) {
      const __m512 xv = _mm512_loadu_ps(x + m * ldx + k);
      acc0[m] = _mm512_fmadd_ps(a, xv, acc0[m]);
      acc1[m] = _mm512_fmadd_ps(b, xv, acc1[m]);
    }
  }
  if (k < K) {
    const __mmask16 mask = static_cast<__mmask16>((1u << (K - k)) - 1u);
    const __m512 a = L::load(w + k, mask), b = L::load(w1 + k, mask);
    for (int m = 0; m < MB; ++m) {
      const __m512 xv = _mm512_maskz_loadu_ps(mask, x + m * ldx + k);
      acc0[m] = _mm512_fmadd_ps(a, xv, acc0[m]);
      acc1[m] = _mm512_fmadd_ps(b, xv, acc1[m]);
    }
  }
  for (int m = 0; m < MB; ++m) {
    y[m * ldy] = _mm512_reduce_add_ps(acc0[m]);
    y[m * ldy + 1] = _mm512_reduce_add_ps(acc1[m]);
  }
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

template <class L, int MB>
inline void dot_row(const float* x, int64_t ldx, const typename L::T* w, int64_t K, float* y,
                    int64_t ldy) {
  __m256 acc0[MB], acc1[MB];
  for (int m = 0; m < MB; ++m) acc0[m] = acc1[m] = _mm256_setzero_ps();
  int64_t k = 0;
  for (; k + 16 <= K; k += 16) {
    const __m256 w0 = L::load(w + k), w1 = L::load(w + k + 8);
    for (int m = 0; m < MB; ++m) {
      acc0[m] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x + m * ldx + k), acc0[m]);
      acc1[m] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(x + m * ldx + k + 8), acc1[m]);
    }
  }
  if (k + 8 <= K) {
    const __m256 w0 = L::load(w + k);
    for (int m = 0; m < MB; ++m)
      acc0[m] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x + m * ldx + k), acc0[m]);
    k += 8;
  }
  for (int m = 0; m < MB; ++m) {
    float s = hsum(_mm256_add_ps(acc0[m], acc1[m]));
    for (int64_t kk = k; kk < K; ++kk) s += L::scalar(w + kk) * x[m * ldx + kk];
    y[m * ldy] = s;
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

template <class L, int MB>
inline void dot_row(const float* x, int64_t ldx, const typename L::T* w, int64_t K, float* y,
                    int64_t ldy) {
  float acc[MB] = {};
  for (int64_t k = 0; k < K; ++k) {
    const float wv = L::scalar(w + k);
    for (int m = 0; m < MB; ++m) acc[m] += wv * x[m * ldx + k];
  }
  for (int m = 0; m < MB; ++m) y[m * ldy] = acc[m];
}

#endif

// All M activation rows against weight row n.
template <class L>
inline void row_all_m(const LinearArgs& a, const typename L::T* w, int64_t n) {
  const typename L::T* wr = w + n * a.K;
  for (int64_t m0 = 0; m0 < a.M; m0 += kMaxRowsX) {
    const float* x = a.x + m0 * a.ldx;
    float* y = a.y + m0 * a.ldy + n;
    switch (std::min<int64_t>(kMaxRowsX, a.M - m0)) {
      case 1: dot_row<L, 1>(x, a.ldx, wr, a.K, y, a.ldy); break;
      case 2: dot_row<L, 2>(x, a.ldx, wr, a.K, y, a.ldy); break;
      case 3: dot_row<L, 3>(x, a.ldx, wr, a.K, y, a.ldy); break;
      default: dot_row<L, 4>(x, a.ldx, wr, a.K, y, a.ldy); break;
    }
  }
}

#if defined(FA_GEMV_AVX512)
// All M activation rows against weight rows n and n + 1.
template <class L>
inline void row_pair_all_m(const LinearArgs& a, const typename L::T* w, int64_t n) {
  const typename L::T* wr = w + n * a.K;
  for (int64_t m0 = 0; m0 < a.M; m0 += kMaxRowsX) {
    const float* x = a.x + m0 * a.ldx;
    float* y = a.y + m0 * a.ldy + n;
    switch (std::min<int64_t>(kMaxRowsX, a.M - m0)) {
      case 1: dot_row_pair<L, 1>(x, a.ldx, wr, a.K, y, a.ldy); break;
      case 2: dot_row_pair<L, 2>(x, a.ldx, wr, a.K, y, a.ldy); break;
      case 3: dot_row_pair<L, 3>(x, a.ldx, wr, a.K, y, a.ldy); break;
      default: dot_row_pair<L, 4>(x, a.ldx, wr, a.K, y, a.ldy); break;
    }
  }
}
#endif

template <class L>
void gemv_typed(const LinearArgs& a, int num_threads) {
  const auto* w = static_cast<const typename L::T*>(a.w);
  const int threads = a.N * a.K < kMinParallelWeights ? 1 : std::max(1, num_threads);
#if defined(FA_GEMV_AVX512)
  if (a.M > 1) {
    const int64_t pairs = a.N / 2;
#pragma omp parallel num_threads(threads)
    {
#pragma omp for schedule(static) nowait
      for (int64_t p = 0; p < pairs; ++p) row_pair_all_m<L>(a, w, 2 * p);
#pragma omp single nowait
      if (a.N % 2) row_all_m<L>(a, w, a.N - 1);
    }
    return;
  }
#endif
  // Static schedule: each thread streams one contiguous range of weight rows.
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t n = 0; n < a.N; ++n) row_all_m<L>(a, w, n);
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

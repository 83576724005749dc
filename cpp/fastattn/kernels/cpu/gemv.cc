// The decode-regime linear kernel: y[M, N] = x[M, K] @ w[N, K]^T for small M.
//
// Batch-1 decode is bound by the bytes of weight read, so the kernel reads each weight element
// exactly once from memory, widens it to fp32 in registers (F16C for float16, a 16-bit shift for
// bfloat16) and multiplies it against up to four activation rows held in L1 (activation rows
// beyond four re-read the weights from L1/L2, not from memory).
//
// Memory access pattern, which decides the speed (measured on the 2-core Zen 4 VM this project
// develops on, weights streamed from DRAM):
//   - each thread owns one contiguous range of weight rows;
//   - the range is cut into kStreams equal parts, and rows i of the parts are processed together,
//     so the thread reads kStreams long sequential streams side by side.
// Reading rows one at a time (one stream) reached ~22-23 GB/s per core, and interleaving adjacent
// rows (many streams 3 KB long) only 11-19 GB/s: the prefetchers want long streams. Two to four
// long streams reached 26-28 GB/s per core and 45-50 GB/s for two cores, above a plain one-stream
// read loop. Four rows at once also share every activation load between four FMAs, which keeps
// M > 1 from becoming bound by loads. Software prefetching made every variant slower.
#include <algorithm>

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

// GCC 12's AVX-512 intrinsics (_mm512_cvtph_ps, _mm512_reduce_add_ps, ...) start from
// _mm512_undefined_ps(), which -Wuninitialized flags at every inlined use: a false positive.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include <omp.h>

#include "fastattn/core/error.h"
#include "fastattn/kernels/cpu/linear_impl.h"
#include "fastattn/kernels/cpu/spin_team.h"

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && defined(__F16C__)
#define FA_GEMV_AVX512 1
#elif defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#define FA_GEMV_AVX2 1
#endif

namespace fastattn::kernels::cpu {
namespace {

// Long sequential weight streams each thread reads side by side (see the header comment).
constexpr int kStreams = 4;
// Activation rows per pass over the weights (kStreams * kMaxRowsX accumulators). AVX2 has 16
// vector registers: 4 x 4 accumulators + 4 weight vectors + 1 activation spilled to the stack in
// the inner loop, so it takes 2 rows per pass (8 + 4 + 1 registers).
#if defined(FA_GEMV_AVX2)
constexpr int kMaxRowsX = 2;
#else
constexpr int kMaxRowsX = 4;
#endif
// Below this many weight elements one thread is faster than forking a team.
constexpr int64_t kMinParallelWeights = 1 << 15;

// Weight rows handled together: w[r] points at row r's first element, y[r] at its output column
// in the first activation row (later rows are ldy floats apart).
template <typename T, int R>
struct RowSet {
  const T* w[R];
  float* y[R];
};

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

// y[r][m * ldy] = dot(x row m, w[r]) for r < R, m < MB.
template <class L, int R, int MB>
inline void dot_rows(const float* x, int64_t ldx, const RowSet<typename L::T, R>& s, int64_t K,
                     int64_t ldy) {
  __m512 acc[MB][R];
  for (int m = 0; m < MB; ++m)
    for (int r = 0; r < R; ++r) acc[m][r] = _mm512_setzero_ps();
  int64_t k = 0;
  for (; k + 16 <= K; k += 16) {
    __m512 wv[R];
    for (int r = 0; r < R; ++r) wv[r] = L::load(s.w[r] + k);
    for (int m = 0; m < MB; ++m) {
      const __m512 xv = _mm512_loadu_ps(x + m * ldx + k);
      for (int r = 0; r < R; ++r) acc[m][r] = _mm512_fmadd_ps(wv[r], xv, acc[m][r]);
    }
  }
  if (k < K) {
    const __mmask16 mask = static_cast<__mmask16>((1u << (K - k)) - 1u);
    __m512 wv[R];
    for (int r = 0; r < R; ++r) wv[r] = L::load(s.w[r] + k, mask);
    for (int m = 0; m < MB; ++m) {
      const __m512 xv = _mm512_maskz_loadu_ps(mask, x + m * ldx + k);
      for (int r = 0; r < R; ++r) acc[m][r] = _mm512_fmadd_ps(wv[r], xv, acc[m][r]);
    }
  }
  for (int m = 0; m < MB; ++m)
    for (int r = 0; r < R; ++r) s.y[r][m * ldy] = _mm512_reduce_add_ps(acc[m][r]);
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

template <class L, int R, int MB>
inline void dot_rows(const float* x, int64_t ldx, const RowSet<typename L::T, R>& s, int64_t K,
                     int64_t ldy) {
  __m256 acc[MB][R];
  for (int m = 0; m < MB; ++m)
    for (int r = 0; r < R; ++r) acc[m][r] = _mm256_setzero_ps();
  int64_t k = 0;
  for (; k + 8 <= K; k += 8) {
    __m256 wv[R];
    for (int r = 0; r < R; ++r) wv[r] = L::load(s.w[r] + k);
    for (int m = 0; m < MB; ++m) {
      const __m256 xv = _mm256_loadu_ps(x + m * ldx + k);
      for (int r = 0; r < R; ++r) acc[m][r] = _mm256_fmadd_ps(wv[r], xv, acc[m][r]);
    }
  }
  for (int m = 0; m < MB; ++m) {
    for (int r = 0; r < R; ++r) {
      float sum = hsum(acc[m][r]);
      for (int64_t kk = k; kk < K; ++kk) sum += L::scalar(s.w[r] + kk) * x[m * ldx + kk];
      s.y[r][m * ldy] = sum;
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

template <class L, int R, int MB>
inline void dot_rows(const float* x, int64_t ldx, const RowSet<typename L::T, R>& s, int64_t K,
                     int64_t ldy) {
  float acc[MB][R] = {};
  for (int64_t k = 0; k < K; ++k) {
    float wv[R];
    for (int r = 0; r < R; ++r) wv[r] = L::scalar(s.w[r] + k);
    for (int m = 0; m < MB; ++m)
      for (int r = 0; r < R; ++r) acc[m][r] += wv[r] * x[m * ldx + k];
  }
  for (int m = 0; m < MB; ++m)
    for (int r = 0; r < R; ++r) s.y[r][m * ldy] = acc[m][r];
}

#endif

// All M activation rows against the R weight rows of s.
template <class L, int R>
inline void rows_all_m(const LinearArgs& a, RowSet<typename L::T, R> s) {
  for (int64_t m0 = 0; m0 < a.M; m0 += kMaxRowsX) {
    const float* x = a.x + m0 * a.ldx;
    const int64_t mb = std::min<int64_t>(kMaxRowsX, a.M - m0);
    if (mb == 1) {
      dot_rows<L, R, 1>(x, a.ldx, s, a.K, a.ldy);
    } else if (kMaxRowsX == 2 || mb == 2) {
      dot_rows<L, R, 2>(x, a.ldx, s, a.K, a.ldy);
    } else if (mb == 3) {
      dot_rows<L, R, 3>(x, a.ldx, s, a.K, a.ldy);
    } else {
      dot_rows<L, R, 4>(x, a.ldx, s, a.K, a.ldy);
    }
    for (int r = 0; r < R; ++r) s.y[r] += kMaxRowsX * a.ldy;
  }
}

// Weight rows [n0, n1) as kStreams long streams side by side, then the leftover rows.
template <class L>
void gemv_range(const LinearArgs& a, int64_t n0, int64_t n1) {
  using T = typename L::T;
  const T* w = static_cast<const T*>(a.w);
  const int64_t q = (n1 - n0) / kStreams;
  for (int64_t i = 0; i < q; ++i) {
    RowSet<T, kStreams> s;
    for (int r = 0; r < kStreams; ++r) {
      const int64_t n = n0 + r * q + i;
      s.w[r] = w + n * a.K;
      s.y[r] = a.y + n;
    }
    rows_all_m<L, kStreams>(a, s);
  }
  for (int64_t n = n0 + kStreams * q; n < n1; ++n)
    rows_all_m<L, 1>(a, RowSet<T, 1>{{w + n * a.K}, {a.y + n}});
}

// One contiguous range of rows per thread.
template <class L>
void gemv_share(void* args, int t, int nt) {
  const LinearArgs& a = *static_cast<const LinearArgs*>(args);
  gemv_range<L>(a, a.N * t / nt, a.N * (t + 1) / nt);
}

template <class L>
void gemv_typed(const LinearArgs& a, int num_threads) {
  const int threads = a.N * a.K < kMinParallelWeights ? 1 : std::max(1, num_threads);
  if (threads == 1) return gemv_share<L>(const_cast<LinearArgs*>(&a), 0, 1);
  // The spin team (spin_team.h: no sleeping-thread wake-up between back-to-back GEMVs), else an
  // OpenMP region.
  if (team_run(threads, &gemv_share<L>, const_cast<LinearArgs*>(&a))) return;
#pragma omp parallel num_threads(threads)
  gemv_share<L>(const_cast<LinearArgs*>(&a), omp_get_thread_num(), omp_get_num_threads());
}

}  // namespace

void gemv_rows(const LinearArgs& a, int num_threads) {
  switch (a.w_type) {
    case DType::kFloat32:
      return gemv_typed<LoadF32>(a, num_threads);
    case DType::kFloat16:
      return gemv_typed<LoadF16>(a, num_threads);
    case DType::kBFloat16:
      return gemv_typed<LoadBF16>(a, num_threads);
    default:
      break;
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

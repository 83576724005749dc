// Vectorised math shared by the CPU kernels (internal): exp512 (AVX-512) and exp256 (AVX2 + FMA);
// callers keep a scalar path.
#pragma once

#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
#include <immintrin.h>
#endif

#if defined(__AVX512F__)

#if defined(__GNUC__) && !defined(__clang__)
// GCC 12's AVX-512 intrinsics start from _mm512_undefined_ps(), which -Wuninitialized flags at
// every inlined use: a false positive. (Ignored for the files that include this header.)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace fastattn::kernels::cpu {

// exp(a + b) for a (any size) plus a small correction b: a + b = n ln2 + r, |r| <= ln2/2, with
// r = (a - n ln2_hi - n ln2_lo) + b so b keeps its own precision; exp(r) by Cephes' polynomial,
// 2^n by scalef (which also gives inf / 0 / denormals at the ends). NaN propagates through the
// clamps (maxps / minps return their second operand when one is NaN).
inline __m512 exp512(__m512 a, __m512 b) {
  a = _mm512_min_ps(_mm512_set1_ps(89.0f), _mm512_max_ps(_mm512_set1_ps(-104.0f), a));
  const __m512 n =
      _mm512_roundscale_ps(_mm512_mul_ps(_mm512_add_ps(a, b), _mm512_set1_ps(1.44269504088896341f)),
                           _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), a);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  r = _mm512_add_ps(r, b);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  return _mm512_scalef_ps(p, n);
}
inline __m512 exp512(__m512 x) { return exp512(x, _mm512_setzero_ps()); }

}  // namespace fastattn::kernels::cpu

#endif  // __AVX512F__

#if defined(__AVX2__) && defined(__FMA__)
namespace fastattn::kernels::cpu {

// exp512's algorithm on 8 lanes. AVX2 has no scalef: 2^n (n in [-150, 128] after the clamps) is
// applied as two exact power-of-two factors 2^n1 * 2^n2, n1 = floor(n / 2), each a normal float
// built in the exponent bits, so the ends still give inf / denormals / 0 as scalef does.
inline __m256 exp256(__m256 a, __m256 b) {
  a = _mm256_min_ps(_mm256_set1_ps(89.0f), _mm256_max_ps(_mm256_set1_ps(-104.0f), a));
  const __m256 n =
      _mm256_round_ps(_mm256_mul_ps(_mm256_add_ps(a, b), _mm256_set1_ps(1.44269504088896341f)),
                      _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), a);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  r = _mm256_add_ps(r, b);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  const __m256i ni = _mm256_cvtps_epi32(n);  // NaN lanes: p is NaN, whatever the factors
  const __m256i n1 = _mm256_srai_epi32(ni, 1);
  const __m256i n2 = _mm256_sub_epi32(ni, n1);
  const __m256i bias = _mm256_set1_epi32(127);
  const __m256 s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n1, bias), 23));
  const __m256 s2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n2, bias), 23));
  return _mm256_mul_ps(_mm256_mul_ps(p, s1), s2);
}
inline __m256 exp256(__m256 x) { return exp256(x, _mm256_setzero_ps()); }

}  // namespace fastattn::kernels::cpu
#endif  // __AVX2__ && __FMA__

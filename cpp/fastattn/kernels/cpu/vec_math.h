// Vectorised math shared by the CPU kernels (internal). AVX-512 only; callers keep a scalar path.
#pragma once

#if defined(__AVX512F__)
#include <immintrin.h>

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
  const __m512 n = _mm512_roundscale_ps(
      _mm512_mul_ps(_mm512_add_ps(a, b), _mm512_set1_ps(1.44269504088896341f)),
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

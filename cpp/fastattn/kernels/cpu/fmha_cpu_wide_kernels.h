// Micro-kernels of the wide attention tile (see fmha_cpu_wide.cc for the layout):
//   qk_tile      S^T[j][lanes] = sum_d K[j][d] * Q^T[d][lanes]
//   pv_tile      O^T[d][lanes] = alpha * O^T[d][lanes] + sum_j V[j][d] * P^T[j][lanes]
//   softmax_tile the online-softmax step on S^T
// Rows of Q^T, S^T, O^T hold `ld` floats (16 * vectors of the sub-tile); a call may cover only
// NC of those 16-lane vectors (pointers offset to the first), which is how masked tiles skip
// the lanes whose rows see none of a range of keys.
#pragma once

#include "fastattn/kernels/cpu/fmha_cpu_impl.h"
#include "fastattn/kernels/cpu/fmha_simd.h"

namespace fastattn::kernels::cpu::wide {

using simd::V16;

// Register blocking: accumulators of R rows x NC vectors (at most 24 of the 32 zmm registers).
// AVX2 (a V16 is two of the 16 ymm registers) runs the tiles one 16-lane vector at a time with 6
// rows: 12 accumulators, 2 registers of Q^T / P^T and a broadcast, GEMM's 6 x 16 micro-kernel.
#if defined(__AVX512F__)
constexpr bool kOneVectorPasses = false;
template <int NC>
constexpr int kQkRows = NC == 4 ? 6 : 8;
template <int NC>
constexpr int kPvRows = NC == 4 ? 6 : (NC == 3 ? 6 : 8);
#else
constexpr bool kOneVectorPasses = true;
template <int NC>
constexpr int kQkRows = 6;
template <int NC>
constexpr int kPvRows = 6;
#endif

// S^T[r] (r < R) for keys krow[0..R).
template <int R, int NC>
inline void qk_block(const float* const* krow, const float* qt, int ld, int head_dim, float* st) {
  V16 acc[R][NC];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int c = 0; c < NC; ++c) acc[r][c] = simd::splat(0.0f);
  const float* kr[R];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) kr[r] = krow[r];
  for (int d = 0; d < head_dim; ++d) {
    V16 qv[NC];
#pragma GCC unroll 4
    for (int c = 0; c < NC; ++c) qv[c] = simd::load(qt + d * ld + 16 * c);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const V16 kb = simd::splat(kr[r][d]);
#pragma GCC unroll 4
      for (int c = 0; c < NC; ++c) acc[r][c] = simd::fma(kb, qv[c], acc[r][c]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int c = 0; c < NC; ++c) simd::store(st + r * ld + 16 * c, acc[r][c]);
}

template <int R, int NC>
inline void qk_tail(int rem, const float* const* krow, const float* qt, int ld, int head_dim,
                    float* st) {
  if (rem == R) {
    qk_block<R, NC>(krow, qt, ld, head_dim, st);
  } else if constexpr (R > 1) {
    qk_tail<R - 1, NC>(rem, krow, qt, ld, head_dim, st);
  }
}

template <int NC>
void qk_tile(const float* const* kptr, int n, const float* qt, int ld, int head_dim, float* st) {
  if constexpr (kOneVectorPasses && NC > 1) {
    for (int c = 0; c < NC; ++c) qk_tile<1>(kptr, n, qt + 16 * c, ld, head_dim, st + 16 * c);
    return;
  }
  constexpr int R = kQkRows<NC>;
  int j = 0;
  for (; j + R <= n; j += R) qk_block<R, NC>(kptr + j, qt, ld, head_dim, st + j * ld);
  if (j < n) qk_tail<R - 1, NC>(n - j, kptr + j, qt, ld, head_dim, st + j * ld);
}

inline void qk_tile_any(int nc, const float* const* kptr, int n, const float* qt, int ld,
                        int head_dim, float* st) {
  switch (nc) {
    case 1:
      return qk_tile<1>(kptr, n, qt, ld, head_dim, st);
    case 2:
      return qk_tile<2>(kptr, n, qt, ld, head_dim, st);
    case 3:
      return qk_tile<3>(kptr, n, qt, ld, head_dim, st);
    default:
      return qk_tile<4>(kptr, n, qt, ld, head_dim, st);
  }
}

// O^T rows d0..d0+R: (alpha *) O^T + sum_j V[j][d] * P^T[j]; alpha null = no rescale.
template <int R, int NC>
inline void pv_block(const float* const* vrow, int d0, const float* pt, int ld, int n,
                     const V16* alpha, float* ot) {
  // Every element is loaded below; the initialiser only quiets gcc 12's -Wuninitialized false
  // positive on the portable (non-AVX-512) V16.
  V16 acc[R][NC] = {};
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int c = 0; c < NC; ++c) {
      acc[r][c] = simd::load(ot + r * ld + 16 * c);
      if (alpha != nullptr) acc[r][c] = simd::mul(acc[r][c], alpha[c]);
    }
  for (int j = 0; j < n; ++j) {
    V16 pv[NC];
#pragma GCC unroll 4
    for (int c = 0; c < NC; ++c) {
      pv[c] = simd::load(pt + j * ld + 16 * c);
      simd::pin(pv[c]);
    }
    const float* vj = vrow[j] + d0;
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const V16 vb = simd::splat(vj[r]);
#pragma GCC unroll 4
      for (int c = 0; c < NC; ++c) acc[r][c] = simd::fma(vb, pv[c], acc[r][c]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int c = 0; c < NC; ++c) simd::store(ot + r * ld + 16 * c, acc[r][c]);
}

template <int R, int NC>
inline void pv_tail(int rem, const float* const* vrow, int d0, const float* pt, int ld, int n,
                    const V16* alpha, float* ot) {
  if (rem == R) {
    pv_block<R, NC>(vrow, d0, pt, ld, n, alpha, ot);
  } else if constexpr (R > 1) {
    pv_tail<R - 1, NC>(rem, vrow, d0, pt, ld, n, alpha, ot);
  }
}

template <int NC>
void pv_tile(const float* const* vptr, int n, const float* pt, int ld, const V16* alpha,
             int head_dim, float* ot) {
  if constexpr (kOneVectorPasses && NC > 1) {
    for (int c = 0; c < NC; ++c) {
      pv_tile<1>(vptr, n, pt + 16 * c, ld, alpha == nullptr ? nullptr : alpha + c, head_dim,
                 ot + 16 * c);
    }
    return;
  }
  constexpr int R = kPvRows<NC>;
  int d = 0;
  for (; d + R <= head_dim; d += R) pv_block<R, NC>(vptr, d, pt, ld, n, alpha, ot + d * ld);
  if (d < head_dim) pv_tail<R - 1, NC>(head_dim - d, vptr, d, pt, ld, n, alpha, ot + d * ld);
}

inline void pv_tile_any(int nc, const float* const* vptr, int n, const float* pt, int ld,
                        const V16* alpha, int head_dim, float* ot) {
  switch (nc) {
    case 1:
      return pv_tile<1>(vptr, n, pt, ld, alpha, head_dim, ot);
    case 2:
      return pv_tile<2>(vptr, n, pt, ld, alpha, head_dim, ot);
    case 3:
      return pv_tile<3>(vptr, n, pt, ld, alpha, head_dim, ot);
    default:
      return pv_tile<4>(vptr, n, pt, ld, alpha, head_dim, ot);
  }
}

// Online-softmax step on S^T[n][16 * C] in place (scores -> probabilities). Applies ALiBi and
// the per-row key ranges, updates the running max m and sum l, returns the rescale factor per
// lane. With `masked`, every score outside its row's key range becomes -inf whatever it held
// (entries a masked tile skipped computing included).
template <int C>
void softmax_tile(float* st, int n, int32_t j0, bool masked, bool alibi, RowTile& t, V16* alpha) {
  constexpr int L = 16 * C;
  for (int c = 0; c < C; ++c) {
    float* col = st + 16 * c;
    const V16 m_old = simd::load(t.m + 16 * c);
    V16 mx = m_old;
    if (masked || alibi) {
      for (int j = 0; j < n; ++j) {
        V16 s = simd::load(col + j * L);
        if (alibi) s = simd::add_alibi(s, t.slope + 16 * c, t.pos + 16 * c, j0 + j);
        if (masked) s = simd::mask_outside(s, t.lo + 16 * c, t.hi + 16 * c, j0 + j);
        simd::store(col + j * L, s);
        mx = simd::max(mx, s);
      }
    } else {
      for (int j = 0; j < n; ++j) mx = simd::max(mx, simd::load(col + j * L));
    }
    // A lane that has seen no visible key keeps m = -inf; subtracting 0 instead keeps exp2 at 0.
    const V16 m_use = simd::zero_if_neg_inf(mx);
    alpha[c] = simd::exp2(simd::sub(m_old, m_use));
    V16 sum = simd::splat(0.0f);
    for (int j = 0; j < n; ++j) {
      const V16 p = simd::exp2(simd::sub(simd::load(col + j * L), m_use));
      simd::store(col + j * L, p);
      sum = simd::add(sum, p);
    }
    simd::store(t.l + 16 * c, simd::fma(simd::load(t.l + 16 * c), alpha[c], sum));
    simd::store(t.m + 16 * c, mx);
  }
}

}  // namespace fastattn::kernels::cpu::wide

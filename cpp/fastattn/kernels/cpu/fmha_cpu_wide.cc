// The wide attention tile (prefill): up to 64 query rows against K/V tiles of kKvTile keys.
//
// Everything is vectorised across query rows, which makes the whole FlashAttention-2 step free of
// transposes of K or V and of horizontal reductions:
//   Q^T   [D][L]   (L = 16 * C lanes, one per query row), scaled by softmax_scale * log2(e)
//   S^T   [n][L]   S^T[j] = sum_d K[j][d] * Q^T[d]      (broadcast K, vector of Q^T)
//   online softmax down the columns of S^T: max and sum are lane-wise vector ops
//   O^T   [D][L]   O^T[d] = alpha * O^T[d] + sum_j V[j][d] * P^T[j]   (broadcast V, vector of P^T)
// Both products are register-blocked AVX-512 FMA micro-kernels (R rows x C vectors of
// accumulators); K and V rows are read in place (float32) or from a converted tile (16-bit).
#include <cmath>

#include "fastattn/kernels/cpu/fmha_cpu_impl.h"
#include "fastattn/kernels/cpu/fmha_simd.h"

namespace fastattn::kernels::cpu {
namespace {

using simd::V16;

// Register blocking: accumulators of R rows x C vectors (R * C <= 24 of the 32 zmm registers).
template <int C>
constexpr int kQkRows = C == 4 ? 6 : (C == 3 ? 8 : (C == 2 ? 8 : 8));
template <int C>
constexpr int kPvRows = C == 4 ? 4 : (C == 3 ? 6 : (C == 2 ? 8 : 8));

// S^T[r] (r < R) for keys krow[0..R) against all lanes of Q^T.
template <int R, int C>
inline void qk_block(const float* const* krow, const float* qt, int head_dim, float* st) {
  constexpr int L = 16 * C;
  V16 acc[R][C];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int c = 0; c < C; ++c) acc[r][c] = simd::splat(0.0f);
  const float* kr[R];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) kr[r] = krow[r];
  for (int d = 0; d < head_dim; ++d) {
    V16 qv[C];
#pragma GCC unroll 4
    for (int c = 0; c < C; ++c) qv[c] = simd::load(qt + d * L + 16 * c);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const V16 kb = simd::splat(kr[r][d]);
#pragma GCC unroll 4
      for (int c = 0; c < C; ++c) acc[r][c] = simd::fma(kb, qv[c], acc[r][c]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int c = 0; c < C; ++c) simd::store(st + r * L + 16 * c, acc[r][c]);
}

template <int R, int C>
inline void qk_tail(int rem, const float* const* krow, const float* qt, int head_dim, float* st) {
  if (rem == R) {
    qk_block<R, C>(krow, qt, head_dim, st);
  } else if constexpr (R > 1) {
    qk_tail<R - 1, C>(rem, krow, qt, head_dim, st);
  }
}

template <int C>
void qk_tile(const float* const* kptr, int n, const float* qt, int head_dim, float* st) {
  constexpr int R = kQkRows<C>;
  constexpr int L = 16 * C;
  int j = 0;
  for (; j + R <= n; j += R) qk_block<R, C>(kptr + j, qt, head_dim, st + j * L);
  if (j < n) qk_tail<R - 1, C>(n - j, kptr + j, qt, head_dim, st + j * L);
}

// O^T rows d0..d0+R: alpha * O^T + sum_j V[j][d] * P^T[j].
template <int R, int C>
inline void pv_block(const float* const* vrow, int d0, const float* pt, int n, const V16* alpha,
                     float* ot) {
  constexpr int L = 16 * C;
  V16 acc[R][C];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int c = 0; c < C; ++c) acc[r][c] = simd::mul(simd::load(ot + r * L + 16 * c), alpha[c]);
  for (int j = 0; j < n; ++j) {
    V16 pv[C];
#pragma GCC unroll 4
    for (int c = 0; c < C; ++c) pv[c] = simd::load(pt + j * L + 16 * c);
    const float* vj = vrow[j] + d0;
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const V16 vb = simd::splat(vj[r]);
#pragma GCC unroll 4
      for (int c = 0; c < C; ++c) acc[r][c] = simd::fma(vb, pv[c], acc[r][c]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int c = 0; c < C; ++c) simd::store(ot + r * L + 16 * c, acc[r][c]);
}

template <int R, int C>
inline void pv_tail(int rem, const float* const* vrow, int d0, const float* pt, int n,
                    const V16* alpha, float* ot) {
  if (rem == R) {
    pv_block<R, C>(vrow, d0, pt, n, alpha, ot);
  } else if constexpr (R > 1) {
    pv_tail<R - 1, C>(rem, vrow, d0, pt, n, alpha, ot);
  }
}

template <int C>
void pv_tile(const float* const* vptr, int n, const float* pt, const V16* alpha, int head_dim,
             float* ot) {
  constexpr int R = kPvRows<C>;
  constexpr int L = 16 * C;
  int d = 0;
  for (; d + R <= head_dim; d += R) pv_block<R, C>(vptr, d, pt, n, alpha, ot + d * L);
  if (d < head_dim) pv_tail<R - 1, C>(head_dim - d, vptr, d, pt, n, alpha, ot + d * L);
}

// Online-softmax step on S^T[n][L] in place (scores -> probabilities). Applies ALiBi and the
// per-row key ranges, updates the running max m and sum l, returns the rescale factor per lane.
template <int C>
void softmax_tile(float* st, int n, int32_t j0, bool masked, bool alibi, Scratch& sc,
                  V16* alpha) {
  constexpr int L = 16 * C;
  for (int c = 0; c < C; ++c) {
    float* col = st + 16 * c;
    const V16 m_old = simd::load(sc.m + 16 * c);
    V16 mx = m_old;
    if (masked || alibi) {
      for (int j = 0; j < n; ++j) {
        V16 s = simd::load(col + j * L);
        if (alibi) s = simd::add_alibi(s, sc.slope + 16 * c, sc.pos + 16 * c, j0 + j);
        if (masked) s = simd::mask_outside(s, sc.lo + 16 * c, sc.hi + 16 * c, j0 + j);
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
    simd::store(sc.l + 16 * c, simd::fma(simd::load(sc.l + 16 * c), alpha[c], sum));
    simd::store(sc.m + 16 * c, mx);
  }
}

template <int C>
void run_wide(const AttnArgs& a, const TileJob& job, Scratch& sc) {
  constexpr int L = 16 * C;
  const SeqInfo s = seq_info(a, job.seq);
  const int D = a.head_dim;
  const int rows = static_cast<int>(job.row_end - job.row_begin);
  const KvSource kv(a, s, job.kv_head);
  const size_t q_elem = dtype_size(a.q_dtype);

  // Rows: scaled Q^T, key ranges, ALiBi slopes. Lanes past `rows` see no key.
  int32_t min_lo = INT32_MAX, max_lo = INT32_MIN, min_hi = INT32_MAX, max_hi = INT32_MIN;
  bool any_empty = false;
  for (int r = 0; r < L; ++r) {
    sc.m[r] = -INFINITY;
    sc.l[r] = 0.0f;
    if (r >= rows) {
      sc.lo[r] = 1, sc.hi[r] = 0, sc.pos[r] = 0, sc.slope[r] = 0.0f;
      for (int d = 0; d < D; ++d) sc.qt[d * L + r] = 0.0f;
      continue;
    }
    const int64_t row = job.row_begin + r;
    const int64_t tok = row / a.group;
    const int head = job.kv_head * a.group + static_cast<int>(row % a.group);
    const KeyRange kr = visible_keys(a, s, tok);
    sc.lo[r] = kr.lo, sc.hi[r] = kr.hi;
    sc.pos[r] = static_cast<int32_t>(tok + s.sk - s.sq);
    sc.slope[r] = alibi_slope_log2(a, s, head);
    if (kr.lo > kr.hi) {
      any_empty = true;
    } else {
      min_lo = std::min(min_lo, kr.lo), max_lo = std::max(max_lo, kr.lo);
      min_hi = std::min(min_hi, kr.hi), max_hi = std::max(max_hi, kr.hi);
    }
    const char* qrow = a.q + ((s.q_begin + tok) * a.q_tok_stride + head * a.q_head_stride) *
                                 static_cast<int64_t>(q_elem);
    convert_to_float(qrow, a.q_dtype, sc.row, D);
    for (int d = 0; d < D; ++d) sc.qt[d * L + r] = sc.row[d] * a.scale_log2;
  }
  for (int64_t i = 0; i < static_cast<int64_t>(D) * L; ++i) sc.ot[i] = 0.0f;

  const int64_t key_begin = std::max<int64_t>(job.key_begin, min_lo);
  const int64_t key_end = std::min<int64_t>(job.key_end, static_cast<int64_t>(max_hi) + 1);
  const bool alibi = a.alibi != nullptr;
  V16 alpha[C];
  for (int64_t j0 = key_begin; j0 < key_end;) {
    const int64_t j1 = std::min<int64_t>(key_end, (j0 / kKvTile + 1) * kKvTile);
    const int n = static_cast<int>(j1 - j0);
    // Tiles inside every row's key range need no mask (fully masked ones are never visited).
    const bool masked = any_empty || j0 < max_lo || j1 - 1 > min_hi;
    gather_rows(kv, false, j0, n, a.kv_dtype, D, sc.kbuf, sc.kptr);
    qk_tile<C>(sc.kptr, n, sc.qt, D, sc.st);
    softmax_tile<C>(sc.st, n, static_cast<int32_t>(j0), masked, alibi, sc, alpha);
    gather_rows(kv, true, j0, n, a.kv_dtype, D, sc.vbuf, sc.vptr);
    pv_tile<C>(sc.vptr, n, sc.st, alpha, D, sc.ot);
    j0 = j1;
  }

  for (int r = 0; r < rows; ++r) {
    for (int d = 0; d < D; ++d) sc.row[d] = sc.ot[d * L + r];
    write_row(a, s, job, job.row_begin + r, sc.row, sc.m[r], sc.l[r]);
  }
}

}  // namespace

void run_wide_job(const AttnArgs& a, const TileJob& job, Scratch& sc) {
  const int64_t rows = job.row_end - job.row_begin;
  FA_ASSERT(rows >= 1 && rows <= kWideMaxRows, "wide tile of ", rows, " rows");
  switch ((rows + 15) / 16) {
    case 1:
      return run_wide<1>(a, job, sc);
    case 2:
      return run_wide<2>(a, job, sc);
    case 3:
      return run_wide<3>(a, job, sc);
    default:
      return run_wide<4>(a, job, sc);
  }
}

}  // namespace fastattn::kernels::cpu

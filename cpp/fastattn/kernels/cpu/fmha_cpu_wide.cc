// The wide attention kernel (prefill): a job of up to 4 sub-tiles of 64 query rows walks the K/V
// tiles of kKvTile keys once; each tile, while in cache, serves every sub-tile in turn.
//
// Everything is vectorised across query rows, which makes the whole FlashAttention-2 step free of
// transposes of K or V and of horizontal reductions:
//   Q^T   [D][L]   (L = 16 * C lanes, one per query row), scaled by softmax_scale * log2(e)
//   S^T   [n][L]   S^T[j] = sum_d K[j][d] * Q^T[d]      (broadcast K, vector of Q^T)
//   online softmax down the columns of S^T: max and sum are lane-wise vector ops
//   O^T   [D][L]   O^T[d] = alpha * O^T[d] + sum_j V[j][d] * P^T[j]   (broadcast V, vector of P^T)
// Both products are register-blocked AVX-512 FMA micro-kernels (R rows x C vectors of
// accumulators); K and V rows are read in place (float32) or from a converted tile (16-bit),
// and the next tile's rows are prefetched while the current one computes.
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
constexpr int kPvRows = C == 4 ? 6 : (C == 3 ? 6 : (C == 2 ? 8 : 8));

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
    for (int c = 0; c < C; ++c) {
      pv[c] = simd::load(pt + j * L + 16 * c);
      simd::pin(pv[c]);
    }
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
void softmax_tile(float* st, int n, int32_t j0, bool masked, bool alibi, RowTile& sc, V16* alpha) {
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

// One sub-tile of up to 64 rows of a wide job.
struct SubTile {
  RowTile* t;
  int64_t row_begin;
  int rows;
  int vectors;  // C: 16-lane vectors covering the rows
  int32_t min_lo, max_lo, min_hi, max_hi;  // over rows that see any key
  bool any_empty;                          // some row sees no key (always masked)
};

// Scaled Q^T, key ranges and ALiBi slopes of a sub-tile; lanes past `rows` see no key.
void setup_rows(const AttnArgs& a, const SeqInfo& s, int kv_head, SubTile& sub) {
  const int L = 16 * sub.vectors;
  const int D = a.head_dim;
  const size_t q_elem = dtype_size(a.q_dtype);
  RowTile& t = *sub.t;
  float* stage = t.ot;  // [L][D] float32 query rows, transposed into Q^T below
  sub.min_lo = INT32_MAX, sub.max_lo = INT32_MIN, sub.min_hi = INT32_MAX, sub.max_hi = INT32_MIN;
  sub.any_empty = false;
  for (int r = 0; r < L; ++r) {
    t.m[r] = -INFINITY;
    t.l[r] = 0.0f;
    if (r >= sub.rows) {
      t.lo[r] = 1, t.hi[r] = 0, t.pos[r] = 0, t.slope[r] = 0.0f;
      for (int d = 0; d < D; ++d) stage[r * D + d] = 0.0f;
      continue;
    }
    const int64_t row = sub.row_begin + r;
    const int64_t tok = row / a.group;
    const int head = kv_head * a.group + static_cast<int>(row % a.group);
    const KeyRange kr = visible_keys(a, s, tok);
    t.lo[r] = kr.lo, t.hi[r] = kr.hi;
    t.pos[r] = static_cast<int32_t>(tok + s.sk - s.sq);
    t.slope[r] = alibi_slope_log2(a, s, head);
    if (kr.lo > kr.hi) {
      sub.any_empty = true;
    } else {
      sub.min_lo = std::min(sub.min_lo, kr.lo), sub.max_lo = std::max(sub.max_lo, kr.lo);
      sub.min_hi = std::min(sub.min_hi, kr.hi), sub.max_hi = std::max(sub.max_hi, kr.hi);
    }
    const char* qrow = a.q + ((s.q_begin + tok) * a.q_tok_stride + head * a.q_head_stride) *
                                 static_cast<int64_t>(q_elem);
    convert_to_float(qrow, a.q_dtype, stage + static_cast<int64_t>(r) * D, D);
  }
  simd::transpose(stage, D, L, D, t.qt, L, a.scale_log2);
  for (int64_t i = 0; i < static_cast<int64_t>(D) * L; ++i) t.ot[i] = 0.0f;
}

// One FlashAttention-2 step of a sub-tile against the K / V tile of keys j0..j0+n.
template <int C>
void tile_step(const AttnArgs& a, SubTile& sub, int64_t j0, int n, const Scratch& sc) {
  const int64_t j1 = j0 + n;
  if (j1 - 1 < sub.min_lo || j0 > sub.max_hi) return;  // no row of this sub-tile sees these keys
  // Tiles inside every row's key range need no mask.
  const bool masked = sub.any_empty || j0 < sub.max_lo || j1 - 1 > sub.min_hi;
  RowTile& t = *sub.t;
  V16 alpha[C];
  qk_tile<C>(sc.kptr, n, t.qt, a.head_dim, t.st);
  softmax_tile<C>(t.st, n, static_cast<int32_t>(j0), masked, a.alibi != nullptr, t, alpha);
  pv_tile<C>(sc.vptr, n, t.st, alpha, a.head_dim, t.ot);
}

void tile_step_any(const AttnArgs& a, SubTile& sub, int64_t j0, int n, const Scratch& sc) {
  switch (sub.vectors) {
    case 1:
      return tile_step<1>(a, sub, j0, n, sc);
    case 2:
      return tile_step<2>(a, sub, j0, n, sc);
    case 3:
      return tile_step<3>(a, sub, j0, n, sc);
    default:
      return tile_step<4>(a, sub, j0, n, sc);
  }
}

}  // namespace

void run_wide_job(const AttnArgs& a, const TileJob& job, Scratch& sc) {
  const int64_t rows = job.row_end - job.row_begin;
  FA_ASSERT(rows >= 1 && rows <= kWideMaxRows * kMaxSubTiles, "wide job of ", rows, " rows");
  const SeqInfo s = seq_info(a, job.seq);
  const int D = a.head_dim;
  const KvSource kv(a, s, job.kv_head);

  SubTile subs[kMaxSubTiles];
  const int n_sub = static_cast<int>((rows + kWideMaxRows - 1) / kWideMaxRows);
  int32_t lo = INT32_MAX, hi = INT32_MIN;
  for (int i = 0; i < n_sub; ++i) {
    SubTile& sub = subs[i];
    sub.t = &sc.tiles[i];
    sub.row_begin = job.row_begin + static_cast<int64_t>(i) * kWideMaxRows;
    sub.rows = static_cast<int>(std::min<int64_t>(kWideMaxRows, job.row_end - sub.row_begin));
    sub.vectors = (sub.rows + 15) / 16;
    setup_rows(a, s, job.kv_head, sub);
    lo = std::min(lo, sub.min_lo), hi = std::max(hi, sub.max_hi);
  }

  const int64_t key_begin = std::max<int64_t>(job.key_begin, lo);
  const int64_t key_end = std::min<int64_t>(job.key_end, static_cast<int64_t>(hi) + 1);
  for (int64_t j0 = key_begin; j0 < key_end;) {
    const int64_t j1 = std::min<int64_t>(key_end, (j0 / kKvTile + 1) * kKvTile);
    const int n = static_cast<int>(j1 - j0);
    const int64_t next_end = std::min<int64_t>(key_end, j1 + kKvTile);
    if (j1 < next_end) prefetch_rows(kv, j1, static_cast<int>(next_end - j1), D);
    gather_rows(kv, false, j0, n, a.kv_dtype, D, sc.kbuf, sc.kptr);
    gather_rows(kv, true, j0, n, a.kv_dtype, D, sc.vbuf, sc.vptr);
    for (int i = 0; i < n_sub; ++i) tile_step_any(a, subs[i], j0, n, sc);
    j0 = j1;
  }

  for (int i = 0; i < n_sub; ++i) {
    const SubTile& sub = subs[i];
    const int L = 16 * sub.vectors;
    float* rows_out = sub.t->qt;  // Q^T is no longer needed: O rows [L][D] go here
    simd::transpose(sub.t->ot, L, D, L, rows_out, D, 1.0f);
    for (int r = 0; r < sub.rows; ++r) {
      write_row(a, s, job, sub.row_begin + r, rows_out + static_cast<int64_t>(r) * D, sub.t->m[r],
                sub.t->l[r]);
    }
  }
}

}  // namespace fastattn::kernels::cpu

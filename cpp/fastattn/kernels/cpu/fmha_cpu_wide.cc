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
#include <algorithm>
#include <cmath>

#include "fastattn/kernels/cpu/fmha_cpu_impl.h"
#include "fastattn/kernels/cpu/fmha_cpu_wide_kernels.h"
#include "fastattn/kernels/cpu/fmha_simd.h"

namespace fastattn::kernels::cpu {
namespace {

using simd::V16;

// One sub-tile of up to 64 rows of a wide job.
struct SubTile {
  RowTile* t;
  int64_t row_begin;
  int rows;
  int vectors;                             // C: 16-lane vectors covering the rows
  int32_t min_lo, max_lo, min_hi, max_hi;  // over rows that see any key
  bool any_empty;                          // some row sees no key (always masked)
  // Per 16-row vector: the union of its rows' key ranges (lo > hi when no row sees a key).
  int32_t vec_lo[4], vec_hi[4];
};

// Keys [begin, end) of a tile (relative to its first key) over which the same vectors [c0, c1)
// of a sub-tile see some key; the others see none there and are skipped.
struct Segment {
  int begin, end, c0, c1;
};

// Cuts a masked tile of keys j0..j0+n into segments by which vectors are active (at most
// 2 * 4 + 1 pieces). Returns the number of segments with an active vector.
int key_segments(const SubTile& sub, int64_t j0, int n, Segment* out) {
  int cuts[2 * 4 + 2];
  int n_cuts = 0;
  cuts[n_cuts++] = 0;
  cuts[n_cuts++] = n;
  for (int c = 0; c < sub.vectors; ++c) {
    if (sub.vec_lo[c] > sub.vec_hi[c]) continue;
    const int64_t lo = sub.vec_lo[c] - j0, end = int64_t{sub.vec_hi[c]} + 1 - j0;
    if (lo > 0 && lo < n) cuts[n_cuts++] = static_cast<int>(lo);
    if (end > 0 && end < n) cuts[n_cuts++] = static_cast<int>(end);
  }
  for (int i = 1; i < n_cuts; ++i)  // insertion sort of <= 10 cut points
    for (int k = i; k > 0 && cuts[k - 1] > cuts[k]; --k) std::swap(cuts[k - 1], cuts[k]);
  int count = 0;
  for (int i = 0; i + 1 < n_cuts; ++i) {
    const int begin = cuts[i], end = cuts[i + 1];
    if (begin == end) continue;
    int c0 = sub.vectors, c1 = 0;
    for (int c = 0; c < sub.vectors; ++c) {
      const bool active = sub.vec_lo[c] <= sub.vec_hi[c] && sub.vec_lo[c] <= j0 + end - 1 &&
                          sub.vec_hi[c] >= j0 + begin;
      if (active) c0 = std::min(c0, c), c1 = std::max(c1, c + 1);
    }
    if (c0 < c1) out[count++] = {begin, end, c0, c1};
  }
  return count;
}

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
  for (int c = 0; c < sub.vectors; ++c) {
    sub.vec_lo[c] = INT32_MAX, sub.vec_hi[c] = INT32_MIN;
    for (int r = 16 * c; r < 16 * c + 16; ++r) {
      if (t.lo[r] > t.hi[r]) continue;
      sub.vec_lo[c] = std::min(sub.vec_lo[c], t.lo[r]);
      sub.vec_hi[c] = std::max(sub.vec_hi[c], t.hi[r]);
    }
  }
  simd::transpose(stage, D, L, D, t.qt, L, a.scale_log2);
  for (int64_t i = 0; i < static_cast<int64_t>(D) * L; ++i) t.ot[i] = 0.0f;
}

// One FlashAttention-2 step of a sub-tile against the K / V tile of keys j0..j0+n.
template <int C>
void tile_step(const AttnArgs& a, SubTile& sub, int64_t j0, int n, const Scratch& sc) {
  constexpr int L = 16 * C;
  const int64_t j1 = j0 + n;
  if (j1 - 1 < sub.min_lo || j0 > sub.max_hi) return;  // no row of this sub-tile sees these keys
  // Tiles inside every row's key range need no mask.
  const bool masked = sub.any_empty || j0 < sub.max_lo || j1 - 1 > sub.min_hi;
  RowTile& t = *sub.t;
  const int D = a.head_dim;
  V16 alpha[C];
  if (!masked) {
    wide::qk_tile<C>(sc.kptr, n, t.qt, L, D, t.st);
    wide::softmax_tile<C>(t.st, n, static_cast<int32_t>(j0), false, a.alibi != nullptr, t, alpha);
    wide::pv_tile<C>(sc.vptr, n, t.st, L, alpha, D, t.ot);
    return;
  }
  // A masked tile (the causal diagonal, window edges) computes, per run of keys, only the
  // 16-row vectors that see some of those keys; the softmax masks the rest to -inf anyway.
  Segment seg[2 * 4 + 1];
  const int n_seg = key_segments(sub, j0, n, seg);
  for (int i = 0; i < n_seg; ++i) {
    const Segment& g = seg[i];
    wide::qk_tile_any(g.c1 - g.c0, sc.kptr + g.begin, g.end - g.begin, t.qt + 16 * g.c0, L, D,
                      t.st + g.begin * L + 16 * g.c0);
  }
  wide::softmax_tile<C>(t.st, n, static_cast<int32_t>(j0), true, a.alibi != nullptr, t, alpha);
  for (int64_t d = 0; d < D; ++d)
    for (int c = 0; c < C; ++c) {
      float* o = t.ot + d * L + 16 * c;
      simd::store(o, simd::mul(simd::load(o), alpha[c]));
    }
  for (int i = 0; i < n_seg; ++i) {
    const Segment& g = seg[i];
    wide::pv_tile_any(g.c1 - g.c0, sc.vptr + g.begin, g.end - g.begin,
                      t.st + g.begin * L + 16 * g.c0, L, nullptr, D, t.ot + 16 * g.c0);
  }
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

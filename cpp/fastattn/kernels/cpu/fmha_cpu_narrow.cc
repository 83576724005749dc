// The narrow attention tile (decode): 1..8 query rows (one token's query heads of a KV group, or a
// few tokens) against K/V tiles, vectorised across the head dim. Decode is bound by reading K and
// V once, so this kernel streams each key and value row exactly once per tile:
//   scores  s[r][j] = dot(q_r, K[j])           four keys at a time, then a horizontal sum
//   softmax per row, vectorised across the tile's keys
//   output  o_r = alpha_r * o_r + sum_j p[r][j] * V[j]   in groups of four 16-float chunks
// A head dim that is not a multiple of 16 uses masked loads for its last chunk.
// With AVX2 + FMA + F16C and a head dim that is a multiple of 8, the tile's loops are the
// streaming ones of fmha_cpu_decode.h instead (KV widened in registers, no float32 copy).
#include <cmath>
#include <vector>

#include "fastattn/kernels/cpu/fmha_cpu_decode.h"
#include "fastattn/kernels/cpu/fmha_cpu_impl.h"
#include "fastattn/kernels/cpu/fmha_simd.h"

namespace fastattn::kernels::cpu {
namespace {

using simd::V16;

inline int padded(int d) { return (d + 15) / 16 * 16; }

// s[r][j..j+KJ) for ROWS query rows (q: [ROWS][Dp]) and keys kp[0..KJ).
template <int ROWS, int KJ>
inline void qk_keys(const float* const* kp, const float* q, int head_dim, float* s, int j) {
  const int dp = padded(head_dim);
  const int full = head_dim / 16, tail = head_dim % 16;
  V16 acc[KJ][ROWS];
#pragma GCC unroll 4
  for (int k = 0; k < KJ; ++k)
#pragma GCC unroll 4
    for (int r = 0; r < ROWS; ++r) acc[k][r] = simd::splat(0.0f);
  for (int ch = 0; ch <= full; ++ch) {
    if (ch == full && tail == 0) break;
    V16 qv[ROWS];
#pragma GCC unroll 4
    for (int r = 0; r < ROWS; ++r) qv[r] = simd::load(q + r * dp + 16 * ch);
#pragma GCC unroll 4
    for (int k = 0; k < KJ; ++k) {
      const V16 kv =
          ch < full ? simd::load(kp[k] + 16 * ch) : simd::load_first(kp[k] + 16 * ch, tail);
#pragma GCC unroll 4
      for (int r = 0; r < ROWS; ++r) acc[k][r] = simd::fma(qv[r], kv, acc[k][r]);
    }
  }
#pragma GCC unroll 4
  for (int k = 0; k < KJ; ++k)
#pragma GCC unroll 4
    for (int r = 0; r < ROWS; ++r) s[r * kKvTile + j + k] = simd::reduce_add(acc[k][r]);
}

// o[r][chunks ch0..ch0+G) = alpha_r * o + sum_j p[r][j] * V[j][chunk]. With TAIL, the group's
// last chunk holds only `tail` valid floats of V.
template <int ROWS, int G, bool TAIL>
inline void pv_group(const float* const* vp, int n, const float* p, const float* alpha, int ch0,
                     int tail, int dp, float* o) {
  V16 acc[ROWS][G];
#pragma GCC unroll 4
  for (int r = 0; r < ROWS; ++r)
#pragma GCC unroll 4
    for (int g = 0; g < G; ++g)
      acc[r][g] = simd::mul(simd::load(o + r * dp + 16 * (ch0 + g)), simd::splat(alpha[r]));
  for (int j = 0; j < n; ++j) {
    V16 v[G];
#pragma GCC unroll 4
    for (int g = 0; g < G; ++g) {
      const float* src = vp[j] + 16 * (ch0 + g);
      v[g] = (TAIL && g == G - 1) ? simd::load_first(src, tail) : simd::load(src);
    }
#pragma GCC unroll 4
    for (int r = 0; r < ROWS; ++r) {
      const V16 pb = simd::splat(p[r * kKvTile + j]);
#pragma GCC unroll 4
      for (int g = 0; g < G; ++g) acc[r][g] = simd::fma(pb, v[g], acc[r][g]);
    }
  }
#pragma GCC unroll 4
  for (int r = 0; r < ROWS; ++r)
#pragma GCC unroll 4
    for (int g = 0; g < G; ++g) simd::store(o + r * dp + 16 * (ch0 + g), acc[r][g]);
}

template <int ROWS, bool TAIL>
void pv_group_dispatch(int g, const float* const* vp, int n, const float* p, const float* alpha,
                       int ch0, int tail, int dp, float* o) {
  switch (g) {
    case 1:
      return pv_group<ROWS, 1, TAIL>(vp, n, p, alpha, ch0, tail, dp, o);
    case 2:
      return pv_group<ROWS, 2, TAIL>(vp, n, p, alpha, ch0, tail, dp, o);
    case 3:
      return pv_group<ROWS, 3, TAIL>(vp, n, p, alpha, ch0, tail, dp, o);
    default:
      return pv_group<ROWS, 4, TAIL>(vp, n, p, alpha, ch0, tail, dp, o);
  }
}

// Online-softmax update of one row's tile scores pr[0..n) (keys j0..): masks / ALiBi, new max,
// pr := 2^(pr - max), and the row's m, l and rescale factor alpha.
template <bool FAST>
inline void softmax_row(float* pr, int n, int64_t j0, bool any_mask, int32_t lo, int32_t hi,
                        int32_t pos, float slope, float& m, float& l, float& alpha) {
  const int n16 = (n + 15) / 16 * 16;
  // A row that sees the whole tile without ALiBi needs no masking.
  if (any_mask && !(lo <= j0 && hi >= j0 + n - 1 && slope == 0.0f)) {
    for (int jj = 0; jj < n; ++jj) {
      const int32_t key = static_cast<int32_t>(j0 + jj);
      const int32_t dist = pos > key ? pos - key : key - pos;
      pr[jj] = (key < lo || key > hi) ? -INFINITY : pr[jj] - slope * static_cast<float>(dist);
    }
  }
  for (int jj = n; jj < n16; ++jj) pr[jj] = -INFINITY;
  V16 mx = simd::splat(-INFINITY);
  for (int jj = 0; jj < n16; jj += 16) mx = simd::max(mx, simd::load(pr + jj));
  const float m_new = std::fmax(m, simd::reduce_max(mx));
  const float m_use = m_new == -INFINITY ? 0.0f : m_new;
  alpha = std::exp2(m - m_use);
  float tile_sum = 0.0f;
#if defined(FASTATTN_DECODE_AVX2)
  if constexpr (FAST) {
    const __m256 mv = _mm256_set1_ps(m_use);
    __m256 sum = _mm256_setzero_ps();
    for (int jj = 0; jj < n16; jj += 8) {
      const __m256 e = simd::exp2_8(_mm256_sub_ps(_mm256_loadu_ps(pr + jj), mv));
      _mm256_storeu_ps(pr + jj, e);
      sum = _mm256_add_ps(sum, e);
    }
    tile_sum = decode::hsum(sum);
  } else
#endif
  {
    V16 sum = simd::splat(0.0f);
    const V16 mv = simd::splat(m_use);
    for (int jj = 0; jj < n16; jj += 16) {
      const V16 e = simd::exp2(simd::sub(simd::load(pr + jj), mv));
      simd::store(pr + jj, e);
      sum = simd::add(sum, e);
    }
    tile_sum = simd::reduce_add(sum);
  }
  l = l * alpha + tile_sum;
  m = m_new;
}

// Prefetches rows [0, n) of a tile for heads [0, heads): each row's heads are one span of
// (heads - 1) * head stride + D elements (contiguous for [tokens, heads, D] rows).
inline void prefetch_span(const char* const* kp, const char* const* vp, int n, int64_t k_span,
                          int64_t v_span) {
  for (int j = 0; j < n; ++j) {
    for (int64_t off = 0; off < k_span; off += 64) __builtin_prefetch(kp[j] + off, 0, 2);
    for (int64_t off = 0; off < v_span; off += 64) __builtin_prefetch(vp[j] + off, 0, 2);
  }
}

// FAST: the fmha_cpu_decode.h loops over KV stored as T; otherwise the portable V16 loops (any
// dtype, any head dim). Rows [row_begin, row_end) = ROWS rows of each of the job's KV heads
// (job.kv_head, or all of them when it is < 0; only with FAST). Per-head state lives in the
// thread's `state` buffer: q and o [heads][ROWS][dp], then m, l, slope [heads][ROWS].
template <int ROWS, bool FAST, DType T>
void run_narrow(const AttnArgs& a, const TileJob& job, Scratch& sc) {
  const SeqInfo s = seq_info(a, job.seq);
  const int D = a.head_dim;
  const int dp = padded(D);
  const int nchunks = dp / 16, tail = D % 16;
  const int heads = job.kv_head < 0 ? a.num_heads_k : 1;
  const int head0 = job.kv_head < 0 ? 0 : job.kv_head;
  const KvSource kv(a, s, head0);
  const int64_t k_hs = a.k_head_stride * static_cast<int64_t>(kv.elem);
  const int64_t v_hs = a.v_head_stride * static_cast<int64_t>(kv.elem);
  const size_t q_elem = dtype_size(a.q_dtype);
  float* p = sc.tiles[0].st;  // [ROWS][kKvTile]
  thread_local std::vector<float> state;
  const size_t hr = static_cast<size_t>(heads) * ROWS;
  state.resize(hr * (2 * static_cast<size_t>(dp) + 3));
  float* qs = state.data();
  float* os = qs + hr * dp;
  float* ms = os + hr * dp;
  float* ls = ms + hr;
  float* slopes = ls + hr;

  int32_t lo[ROWS], hi[ROWS], pos[ROWS];
  int32_t min_lo = INT32_MAX, max_hi = INT32_MIN;
  float alpha[ROWS];
  for (int r = 0; r < ROWS; ++r) {
    const int64_t row = job.row_begin + r;
    const int64_t tok = row / a.group;
    const KeyRange kr = visible_keys(a, s, tok);
    lo[r] = kr.lo, hi[r] = kr.hi;
    pos[r] = static_cast<int32_t>(tok + s.sk - s.sq);
    if (kr.lo <= kr.hi) min_lo = std::min(min_lo, kr.lo), max_hi = std::max(max_hi, kr.hi);
    for (int h = 0; h < heads; ++h) {
      const int head = (head0 + h) * a.group + static_cast<int>(row % a.group);
      const size_t i = static_cast<size_t>(h) * ROWS + r;
      slopes[i] = alibi_slope_log2(a, s, head);
      ms[i] = -INFINITY;
      ls[i] = 0.0f;
      float* q = qs + i * dp;
      float* o = os + i * dp;
      const char* qrow = a.q + ((s.q_begin + tok) * a.q_tok_stride + head * a.q_head_stride) *
                                   static_cast<int64_t>(q_elem);
      convert_to_float(qrow, a.q_dtype, q, D);
      for (int d = 0; d < dp; ++d) {
        q[d] = d < D ? q[d] * a.scale_log2 : 0.0f;
        o[d] = 0.0f;
      }
    }
  }

  const int64_t key_begin = std::max<int64_t>(job.key_begin, min_lo);
  const int64_t key_end = std::min<int64_t>(job.key_end, static_cast<int64_t>(max_hi) + 1);
  const bool any_mask = has_mask(a) || a.alibi != nullptr;
  const int64_t row_bytes = static_cast<int64_t>(D) * static_cast<int64_t>(kv.elem);
  const int64_t k_span = (heads - 1) * k_hs + row_bytes, v_span = (heads - 1) * v_hs + row_bytes;
  // Keys per tile: 64, fewer when the tile covers several heads, so that the tile being read and
  // the next one (prefetched) stay well inside L2 (8 heads x 16 keys of 128 fp16 K and V: 64 KB).
  const int tk = heads >= 4 ? 16 : heads >= 2 ? 32 : kKvTile;
  // Row pointers (head head0) of the current and the next tile (the next one's are prefetched).
  const char* ptr_store[2][2][kKvTile];
  const char* hp[2][kKvTile];  // the current head's row pointers
  int cur = 0;
  if (key_begin < key_end) {
    const int64_t j1 = std::min<int64_t>(key_end, (key_begin / tk + 1) * tk);
    kv.rows(key_begin, static_cast<int>(j1 - key_begin), ptr_store[0][0], ptr_store[0][1]);
  }
  for (int64_t j0 = key_begin; j0 < key_end;) {
    const int64_t j1 = std::min<int64_t>(key_end, (j0 / tk + 1) * tk);
    const int n = static_cast<int>(j1 - j0);
    const int64_t next_end = std::min<int64_t>(key_end, j1 + tk);
    const int nn = static_cast<int>(std::max<int64_t>(0, next_end - j1));
    const char* const* nkp = ptr_store[cur ^ 1][0];
    const char* const* nvp = ptr_store[cur ^ 1][1];
    if (nn > 0) kv.rows(j1, nn, ptr_store[cur ^ 1][0], ptr_store[cur ^ 1][1]);
    for (int h = 0; h < heads; ++h) {
      // This head's share of the next tile's prefetches, spread over the heads.
      const int pf0 = nn * h / heads, pf1 = nn * (h + 1) / heads;
      prefetch_span(nkp + pf0, nvp + pf0, pf1 - pf0, k_span, v_span);
      const char* const* kp = ptr_store[cur][0];
      const char* const* vp = ptr_store[cur][1];
      if (h > 0) {
        for (int jj = 0; jj < n; ++jj) hp[0][jj] = kp[jj] + h * k_hs, hp[1][jj] = vp[jj] + h * v_hs;
        kp = hp[0], vp = hp[1];
      }
      float* q = qs + static_cast<size_t>(h) * ROWS * dp;
      float* o = os + static_cast<size_t>(h) * ROWS * dp;
#if defined(FASTATTN_DECODE_AVX2)
      if constexpr (FAST) {
        decode::qk_tile<T, ROWS>(kp, n, q, dp, D, p, kKvTile);
      } else
#endif
      {
        for (int jj = 0; jj < n; ++jj) {
          if (a.kv_dtype == DType::kFloat32) {
            sc.kptr[jj] = reinterpret_cast<const float*>(kp[jj]);
          } else {
            float* dst = sc.kbuf + static_cast<int64_t>(jj) * converted_row_stride(D);
            convert_to_float(kp[jj], a.kv_dtype, dst, D);
            sc.kptr[jj] = dst;
          }
        }
        int j = 0;
        for (; j + 4 <= n && ROWS <= 4; j += 4) qk_keys<ROWS, 4>(sc.kptr + j, q, D, p, j);
        for (; j < n; ++j) qk_keys<ROWS, 1>(sc.kptr + j, q, D, p, j);
      }

      for (int r = 0; r < ROWS; ++r) {
        const size_t i = static_cast<size_t>(h) * ROWS + r;
        softmax_row<FAST>(p + r * kKvTile, n, j0, any_mask, lo[r], hi[r], pos[r], slopes[i], ms[i],
                          ls[i], alpha[r]);
      }

#if defined(FASTATTN_DECODE_AVX2)
      if constexpr (FAST) {
        decode::pv_tile<T, ROWS>(vp, n, p, kKvTile, alpha, D, dp, o);
      } else
#endif
      {
        for (int jj = 0; jj < n; ++jj) {
          if (a.kv_dtype == DType::kFloat32) {
            sc.vptr[jj] = reinterpret_cast<const float*>(vp[jj]);
          } else {
            float* dst = sc.vbuf + static_cast<int64_t>(jj) * converted_row_stride(D);
            convert_to_float(vp[jj], a.kv_dtype, dst, D);
            sc.vptr[jj] = dst;
          }
        }
        for (int ch0 = 0; ch0 < nchunks; ch0 += 4) {
          const int g = std::min(4, nchunks - ch0);
          if (tail != 0 && ch0 + g == nchunks) {
            pv_group_dispatch<ROWS, true>(g, sc.vptr, n, p, alpha, ch0, tail, dp, o);
          } else {
            pv_group_dispatch<ROWS, false>(g, sc.vptr, n, p, alpha, ch0, tail, dp, o);
          }
        }
      }
    }
    cur ^= 1;
    j0 = j1;
  }

  for (int h = 0; h < heads; ++h) {
    TileJob hj = job;
    hj.kv_head = head0 + h;
    if (job.partial_o != nullptr) {
      hj.partial_o = job.partial_o + static_cast<int64_t>(h) * ROWS * D;
      hj.partial_lse = job.partial_lse + static_cast<int64_t>(h) * ROWS;
    }
    for (int r = 0; r < ROWS; ++r) {
      const size_t i = static_cast<size_t>(h) * ROWS + r;
      write_row(a, s, hj, job.row_begin + r, os + i * dp, ms[i], ls[i]);
    }
  }
}

template <int ROWS>
void run_narrow_rows(const AttnArgs& a, const TileJob& job, Scratch& sc) {
#if defined(FASTATTN_DECODE_AVX2)
  if (a.head_dim % 8 == 0) {
    switch (a.kv_dtype) {
      case DType::kFloat16:
        return run_narrow<ROWS, true, DType::kFloat16>(a, job, sc);
      case DType::kBFloat16:
        return run_narrow<ROWS, true, DType::kBFloat16>(a, job, sc);
      case DType::kFloat32:
        return run_narrow<ROWS, true, DType::kFloat32>(a, job, sc);
      default:
        break;
    }
  }
#endif
  FA_ASSERT(job.kv_head >= 0, "all-heads narrow job without the AVX2 loops");
  run_narrow<ROWS, false, DType::kFloat32>(a, job, sc);
}

}  // namespace

bool narrow_all_heads_supported(const AttnArgs& a) {
#if defined(FASTATTN_DECODE_AVX2)
  return a.head_dim % 8 == 0 && (a.kv_dtype == DType::kFloat16 || a.kv_dtype == DType::kBFloat16 ||
                                 a.kv_dtype == DType::kFloat32);
#else
  (void)a;
  return false;
#endif
}

void run_narrow_job(const AttnArgs& a, const TileJob& job, Scratch& sc) {
  switch (job.row_end - job.row_begin) {
    case 1:
      return run_narrow_rows<1>(a, job, sc);
    case 2:
      return run_narrow_rows<2>(a, job, sc);
    case 3:
      return run_narrow_rows<3>(a, job, sc);
    case 4:
      return run_narrow_rows<4>(a, job, sc);
    case 5:
      return run_narrow_rows<5>(a, job, sc);
    case 6:
      return run_narrow_rows<6>(a, job, sc);
    case 7:
      return run_narrow_rows<7>(a, job, sc);
    case 8:
      return run_narrow_rows<8>(a, job, sc);
    default:
      FA_ASSERT(false, "narrow tile of ", job.row_end - job.row_begin, " rows");
  }
}

}  // namespace fastattn::kernels::cpu

// Weighted quickselect over structure-of-arrays candidates. Each round takes a pivot logit, sums
// the weight above and at it (vectorised), and keeps only the side that holds the crossing
// token (compacted in place with AVX-512 compress stores). Expected work ~2-3 passes over the
// candidates; a full sort of a 32K vocabulary (what a nucleus filter usually does) costs ~1 ms.
#include "fastattn/kernels/cpu/sampling_select.h"

#include <algorithm>
#include <limits>
#include <numeric>

#include "fastattn/kernels/cpu/vec_math.h"

namespace fastattn::kernels::cpu {
namespace {

enum class Side { kAbove, kEqual, kBelow };

// Spare elements at the end of the candidate arrays (whole-vector stores may spill past n).
constexpr size_t kPad = 16;

struct Masses {
  double above = 0.0, equal = 0.0;  // weight (or count) above / at the pivot
  size_t below = 0;                 // how many below it
};

Masses masses(const Candidates& c, size_t n, float pivot, bool count) {
  const float* l = c.logit.data();
  const float* w = c.weight.data();
  Masses m;
  size_t i = 0;
#if defined(__AVX512F__)
  // Weights are summed in double (8 lanes per half): the sums decide which side holds the
  // crossing token, so they must not drift by float rounding over 32K terms.
  const __m512 p = _mm512_set1_ps(pivot), one = _mm512_set1_ps(1.0f);
  __m512d above = _mm512_setzero_pd(), equal = _mm512_setzero_pd();
  for (; i + 16 <= n; i += 16) {
    const __m512 lv = _mm512_loadu_ps(l + i);
    const __m512 wv = count ? one : _mm512_loadu_ps(w + i);
    const __m512 a = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(lv, p, _CMP_GT_OQ), wv);
    const __m512 e = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(lv, p, _CMP_EQ_OQ), wv);
    above = _mm512_add_pd(above, _mm512_cvtps_pd(_mm512_castps512_ps256(a)));
    above = _mm512_add_pd(above, _mm512_cvtps_pd(_mm512_extractf32x8_ps(a, 1)));
    equal = _mm512_add_pd(equal, _mm512_cvtps_pd(_mm512_castps512_ps256(e)));
    equal = _mm512_add_pd(equal, _mm512_cvtps_pd(_mm512_extractf32x8_ps(e, 1)));
    m.below += static_cast<size_t>(__builtin_popcount(_mm512_cmp_ps_mask(lv, p, _CMP_LT_OQ)));
  }
  m.above = _mm512_reduce_add_pd(above);
  m.equal = _mm512_reduce_add_pd(equal);
#endif
  for (; i < n; ++i) {
    const double wi = count ? 1.0 : static_cast<double>(w[i]);
    m.above += l[i] > pivot ? wi : 0.0;
    m.equal += l[i] == pivot ? wi : 0.0;
    m.below += l[i] < pivot ? 1 : 0;
  }
  return m;
}

// Keeps c[0, n) whose logit is above / equal to / below pivot, in place; returns how many.
size_t compact(Candidates& c, size_t n, float pivot, Side side) {
  float* l = c.logit.data();
  float* w = c.weight.data();
  int32_t* id = c.id.data();
  size_t j = 0, i = 0;
#if defined(__AVX512F__)
  const __m512 p = _mm512_set1_ps(pivot);
  for (; i < n; i += 16) {
    const __mmask16 valid = n - i >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << (n - i)) - 1u);
    const __m512 lv = _mm512_maskz_loadu_ps(valid, l + i);
    const __m512 wv = _mm512_maskz_loadu_ps(valid, w + i);
    const __m512i iv = _mm512_maskz_loadu_epi32(valid, id + i);
    // (The comparison predicate must be a compile-time constant, hence the three calls.)
    const __mmask16 keep = side == Side::kAbove ? _mm512_mask_cmp_ps_mask(valid, lv, p, _CMP_GT_OQ)
                           : side == Side::kEqual
                               ? _mm512_mask_cmp_ps_mask(valid, lv, p, _CMP_EQ_OQ)
                               : _mm512_mask_cmp_ps_mask(valid, lv, p, _CMP_LT_OQ);
    // Compress in registers and store whole vectors (compress-to-memory is microcoded and slow
    // on Zen 4). j <= i, so the 16 lanes written land at or before the block just read; the
    // arrays carry kPad spare elements for the last block.
    _mm512_storeu_ps(l + j, _mm512_maskz_compress_ps(keep, lv));
    _mm512_storeu_ps(w + j, _mm512_maskz_compress_ps(keep, wv));
    _mm512_storeu_si512(id + j, _mm512_maskz_compress_epi32(keep, iv));
    j += static_cast<size_t>(__builtin_popcount(keep));
  }
#else
  for (; i < n; ++i) {
    const bool keep = side == Side::kAbove   ? l[i] > pivot
                      : side == Side::kEqual ? l[i] == pivot
                                             : l[i] < pivot;
    l[j] = l[i];
    w[j] = w[i];
    id[j] = id[i];
    j += keep ? 1 : 0;
  }
#endif
  return j;
}

// The median of three sample logits: a pivot that is present among the candidates.
float pick_pivot(const Candidates& c, size_t n) {
  float a = c.logit[0], b = c.logit[n / 2], d = c.logit[n - 1];
  if (a > b) std::swap(a, b);
  if (b > d) std::swap(b, d);
  if (a > b) std::swap(a, b);
  return b;
}

}  // namespace

void Candidates::gather(const float* logits, const float* w, int64_t V, Rank limit) {
  logit.resize(static_cast<size_t>(V) + kPad);
  weight.resize(static_cast<size_t>(V) + kPad);
  id.resize(static_cast<size_t>(V) + kPad);
  size_t j = 0;
  for (int64_t i = 0; i < V; ++i) {
    const bool keep = w[i] > 0.0f && kept_by(logits[i], static_cast<int32_t>(i), limit);
    logit[j] = logits[i];
    weight[j] = w[i];
    id[j] = static_cast<int32_t>(i);
    j += keep ? 1 : 0;
  }
  n = j;
}

Rank select_prefix(Candidates& c, double target, bool count) {
  size_t n = c.n;
  for (;;) {
    if (n <= 32) {  // finish by sorting the few left
      std::vector<size_t> order(n);
      std::iota(order.begin(), order.end(), size_t{0});
      std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
        return c.logit[a] > c.logit[b] || (c.logit[a] == c.logit[b] && c.id[a] < c.id[b]);
      });
      double cum = 0.0;
      for (size_t k : order) {
        cum += count ? 1.0 : static_cast<double>(c.weight[k]);
        if (cum >= target) return {c.logit[k], c.id[k]};
      }
      return {c.logit[order.back()], c.id[order.back()]};
    }
    const float pivot = pick_pivot(c, n);
    const Masses m = masses(c, n, pivot, count);
    const double above = m.above, equal = m.equal;
    if (above >= target) {  // the crossing token ranks above the pivot
      n = compact(c, n, pivot, Side::kAbove);
      continue;
    }
    if (above + equal >= target || m.below == 0) {
      // It is among the tokens tied at the pivot, which rank by id.
      n = compact(c, n, pivot, Side::kEqual);
      std::vector<std::pair<int32_t, float>> tied(n);
      for (size_t i = 0; i < n; ++i) tied[i] = {c.id[i], c.weight[i]};
      std::sort(tied.begin(), tied.end());
      double cum = above;
      for (const auto& t : tied) {
        cum += count ? 1.0 : static_cast<double>(t.second);
        if (cum >= target) return {pivot, t.first};
      }
      return {pivot, tied.back().first};
    }
    target -= above + equal;
    n = compact(c, n, pivot, Side::kBelow);
  }
}

}  // namespace fastattn::kernels::cpu

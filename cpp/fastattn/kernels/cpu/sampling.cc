// Token sampling: greedy, temperature, top-k, top-p, with a counter-based random draw.
//
// Order of the filters follows Hugging Face's logits warpers: temperature, then top-k, then top-p
// (nucleus over the softmax of what top-k kept; the token that crosses top_p is kept, so at least
// one token always survives; "most likely" orders by logit, ties to the lower id). One uniform
// draw u = uniform_from_counter(seed, step) then walks the kept tokens in id order and picks the
// first whose cumulative probability exceeds u * total. The draw depends only on (seed, step) and
// the kept set: rows are independent of batch composition, thread count and machine.
// Everything is O(V) per row (vectorised softmax weights, nth_element for top-k, a weighted
// quickselect for top-p): no sort of the vocabulary.
#include <algorithm>
#include <cmath>
#include <exception>
#include <limits>
#include <vector>

#include "fastattn/kernels/cpu/cpu_util.h"
#include "fastattn/kernels/cpu/vec_math.h"
#include "fastattn/kernels/sampling.h"

namespace fastattn::kernels {
namespace {

inline uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

void check_params(const SamplingParams& p, int64_t row) {
  FA_CHECK(std::isfinite(p.temperature) && p.temperature >= 0.0f, "sampling: temperature ",
           p.temperature, " of row ", row, " must be a finite number >= 0 (0 = greedy)");
  FA_CHECK(p.top_k >= 0, "sampling: top_k ", p.top_k, " of row ", row,
           " must be >= 0 (0 = no limit)");
  FA_CHECK(p.top_p > 0.0f && p.top_p <= 1.0f, "sampling: top_p ", p.top_p, " of row ", row,
           " must lie in (0, 1] (1 = no limit)");
}

// Checks a logits row; returns the index of the largest logit (lowest id among ties).
int64_t check_and_argmax(const float* l, int64_t V, int64_t row) {
  int64_t best = -1;
  float best_v = -std::numeric_limits<float>::infinity();
  for (int64_t i = 0; i < V; ++i) {
    const float v = l[i];
    FA_CHECK(!std::isnan(v) && v != std::numeric_limits<float>::infinity(), "logits: row ", row,
             " has ", v, " at token ", i, " (logits must be finite or -inf)");
    if (v > best_v) {
      best_v = v;
      best = i;
    }
  }
  FA_CHECK(best >= 0, "logits: every logit of row ", row, " is -inf: no token can be sampled");
  return best;
}

// w[i] = exp((l[i] - max) / T) as float (relative error ~2 ulp), 0 for -inf logits.
void softmax_weights(const float* l, int64_t V, float max_logit, float inv_t, float* w) {
  int64_t i = 0;
#if defined(__AVX512F__)
  const __m512 mx = _mm512_set1_ps(max_logit), it = _mm512_set1_ps(inv_t);
  const __m512 ninf = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  for (; i + 16 <= V; i += 16) {
    const __m512 x = _mm512_loadu_ps(l + i);
    const __m512 e = cpu::exp512(_mm512_mul_ps(_mm512_sub_ps(x, mx), it));
    const __mmask16 live = _mm512_cmp_ps_mask(x, ninf, _CMP_NEQ_OQ);
    _mm512_storeu_ps(w + i, _mm512_maskz_mov_ps(live, e));
  }
#endif
  for (; i < V; ++i)
    w[i] = l[i] == -std::numeric_limits<float>::infinity() ? 0.0f
                                                           : std::exp((l[i] - max_logit) * inv_t);
}

struct Candidate {
  float logit;
  int32_t id;
  float weight;  // w[id], carried along so the selection loops read no other array
};
// Higher logit first; lower id first among equal logits (a strict total order, so "the k best"
// and "the nucleus" are well-defined sets).
inline bool before(const Candidate& a, const Candidate& b) {
  return a.logit > b.logit || (a.logit == b.logit && a.id < b.id);
}

// Reorders c[0, n) so that its first m elements are the smallest most-likely prefix (in `before`
// order) whose weight reaches `target`; returns m (>= 1). Weighted quickselect: expected O(n),
// where sorting a 32K vocabulary would cost milliseconds.
size_t nucleus_prefix(Candidate* c, size_t n, double target) {
  size_t lo = 0, hi = n;  // the answer lies in [lo, hi); c[0, lo) is already in the nucleus
  while (hi - lo > 16) {
    // Median of three as pivot, moved to lo.
    const size_t mid = lo + (hi - lo) / 2;
    if (before(c[mid], c[lo])) std::swap(c[mid], c[lo]);
    if (before(c[hi - 1], c[lo])) std::swap(c[hi - 1], c[lo]);
    if (before(c[hi - 1], c[mid])) std::swap(c[hi - 1], c[mid]);
    std::swap(c[lo], c[mid]);
    const Candidate pivot = c[lo];
    // Partition c[lo + 1, hi): better than the pivot first. Branch-free (the comparison is a
    // coin flip that a branch predictor cannot learn).
    size_t split = lo + 1;
    double better = 0.0;
    for (size_t i = lo + 1; i < hi; ++i) {
      const Candidate x = c[i];
      const bool b = before(x, pivot);
      c[i] = c[split];
      c[split] = x;
      better += b ? static_cast<double>(x.weight) : 0.0;
      split += b ? 1 : 0;
    }
    std::swap(c[lo], c[split - 1]);  // pivot between the two sides, at split - 1
    if (better >= target) {
      hi = split - 1;  // the nucleus ends among the better ones
      continue;
    }
    target -= better;
    if (static_cast<double>(pivot.weight) >= target) return split;  // the pivot crosses top_p
    target -= pivot.weight;
    lo = split;
  }
  std::sort(c + lo, c + hi, before);
  double cum = 0.0;
  size_t m = lo;
  while (m < hi) {
    cum += c[m++].weight;
    if (cum >= target) break;
  }
  return std::max<size_t>(m, 1);
}

struct RowScratch {
  std::vector<float> w;
  std::vector<Candidate> cand;
  std::vector<uint8_t> keep;
};

int32_t sample_row(const float* logits, int64_t V, const SamplingParams& p, uint64_t step,
                   int64_t row, RowScratch& s) {
  const int64_t argmax = check_and_argmax(logits, V, row);
  if (p.temperature == 0.0f || p.top_k == 1) return static_cast<int32_t>(argmax);

  s.w.resize(static_cast<size_t>(V));
  float* w = s.w.data();
  softmax_weights(logits, V, logits[argmax], 1.0f / p.temperature, w);
  const bool filtered = p.top_k > 0 || p.top_p < 1.0f;
  if (filtered) {
    // Candidates: tokens with non-zero weight (the rest cannot be drawn anyway).
    s.cand.clear();
    for (int64_t i = 0; i < V; ++i)
      if (w[i] > 0.0f) s.cand.push_back({logits[i], static_cast<int32_t>(i), w[i]});
    size_t n = s.cand.size();
    if (p.top_k > 0 && static_cast<size_t>(p.top_k) < n) {
      n = static_cast<size_t>(p.top_k);
      std::nth_element(s.cand.begin(), s.cand.begin() + static_cast<ptrdiff_t>(n - 1), s.cand.end(),
                       before);
    }
    if (p.top_p < 1.0f) {
      double mass = 0.0;
      for (size_t i = 0; i < n; ++i) mass += s.cand[i].weight;
      n = nucleus_prefix(s.cand.data(), n, static_cast<double>(p.top_p) * mass);
    }
    s.keep.assign(static_cast<size_t>(V), 0);
    for (size_t i = 0; i < n; ++i) s.keep[s.cand[i].id] = 1;
  }
  // The draw walks the kept tokens in id order, so it depends only on the kept set.
  const uint8_t* keep = filtered ? s.keep.data() : nullptr;
  double total = 0.0;
  for (int64_t i = 0; i < V; ++i)
    if (!keep || keep[i]) total += w[i];
  const double u = static_cast<double>(uniform_from_counter(p.seed, step)) * total;
  double cum = 0.0;
  int64_t last = argmax;
  for (int64_t i = 0; i < V; ++i) {
    if ((keep && !keep[i]) || w[i] == 0.0f) continue;
    cum += w[i];
    last = i;
    if (u < cum) return static_cast<int32_t>(i);
  }
  return static_cast<int32_t>(last);  // u * total rounded up to the full mass
}

}  // namespace

float uniform_from_counter(uint64_t seed, uint64_t counter) {
  // Two rounds of splitmix64 over (seed, counter): a counter-based generator, so any (seed, step)
  // is drawn directly without advancing state. Top 24 bits -> a float in [0, 1).
  const uint64_t bits = splitmix64(splitmix64(seed) ^ (counter * 0xD1B54A32D192ED03ull));
  return static_cast<float>(bits >> 40) * (1.0f / 16777216.0f);
}

void sample(const Context& ctx, const Tensor& logits, const std::vector<SamplingParams>& params,
            const std::vector<uint64_t>& steps, Tensor& out) {
  check_cpu(logits, "logits");
  check_cpu(out, "out");
  check_dtype(logits, "logits", DType::kFloat32);
  check_dim(logits, "logits", 2);
  FA_CHECK(logits.last_dim_contiguous(), "logits: the last dimension must be contiguous, got ",
           logits.describe(), " with strides ", shape_str(logits.strides()));
  const int64_t B = logits.size(0), V = logits.size(1);
  FA_CHECK(V > 0, "logits: empty vocabulary in ", logits.describe());
  FA_CHECK(V <= std::numeric_limits<int32_t>::max(), "logits: vocabulary of ", V,
           " does not fit int32 token ids");
  check_dtype(out, "out", DType::kInt32);
  check_shape(out, "out", {B});
  check_contiguous(out, "out");
  FA_CHECK(static_cast<int64_t>(params.size()) == B, "sampling: ", params.size(),
           " parameter sets for a batch of ", B, " rows");
  FA_CHECK(static_cast<int64_t>(steps.size()) == B, "sampling: ", steps.size(),
           " steps for a batch of ", B, " rows");
  for (int64_t b = 0; b < B; ++b) check_params(params[b], b);

  const float* lp = logits.data_as<const float>();
  int32_t* op = out.data_as<int32_t>();
  const int64_t ld = logits.stride(0);
  // Each row is independent; an exception inside the parallel region is carried out of it
  // (the first failing row's, whatever the thread count).
  std::vector<std::exception_ptr> errors(static_cast<size_t>(B));
#pragma omp parallel num_threads(cpu::threads_for(ctx, B * V))
  {
    // Per-thread buffers kept between calls: a 32K vocabulary needs ~400 KB, which malloc would
    // otherwise map and fault in afresh on every decode step.
    thread_local RowScratch scratch;
#pragma omp for schedule(static)
    for (int64_t b = 0; b < B; ++b) {
      try {
        op[b] = sample_row(lp + b * ld, V, params[b], steps[b], b, scratch);
      } catch (...) {
        errors[b] = std::current_exception();
      }
    }
  }
  for (const std::exception_ptr& e : errors)
    if (e) std::rethrow_exception(e);
}

}  // namespace fastattn::kernels

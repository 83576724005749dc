// Token sampling: greedy, temperature, top-k, top-p, with a counter-based random draw.
//
// Order of the filters follows Hugging Face's logits warpers: temperature, then top-k, then top-p
// (nucleus over the softmax of what top-k kept; the token that crosses top_p is kept, so at least
// one token always survives; "most likely" orders by logit, ties to the lower id). One uniform
// draw u = uniform_from_counter(seed, step) then walks the kept tokens in id order and picks the
// first whose cumulative probability exceeds u * total. The draw depends only on (seed, step) and
// the kept set: rows are independent of batch composition, thread count and machine.
// Everything is O(V) per row (vectorised softmax weights; top-k and top-p both as a weighted
// quickselect in sampling_select.cc that yields a threshold rank): no sort of the vocabulary.
// The arguments are checked by kernels/sampling.cc, which also holds the draw.
#include <algorithm>
#include <cmath>
#include <exception>
#include <limits>
#include <vector>

#include "fastattn/kernels/cpu/cpu_util.h"
#include "fastattn/kernels/cpu/sampling_cpu.h"
#include "fastattn/kernels/cpu/sampling_select.h"
#include "fastattn/kernels/cpu/vec_math.h"
#include "fastattn/kernels/sampling.h"

namespace fastattn::kernels {
namespace {

// Checks a logits row; returns the index of the largest logit (lowest id among ties).
int64_t check_and_argmax(const float* l, int64_t V, int64_t row) {
  // Vectorisable passes: the largest value and whether any value is NaN or +inf; the slow
  // search for the culprit only runs when there is one.
  float max_v = -std::numeric_limits<float>::infinity();
  int bad = 0;
#pragma omp simd reduction(max : max_v) reduction(| : bad)
  for (int64_t i = 0; i < V; ++i) {
    const float v = l[i];
    bad |= (v != v) | (v == std::numeric_limits<float>::infinity());
    max_v = v > max_v ? v : max_v;
  }
  if (bad) {
    for (int64_t i = 0; i < V; ++i)
      FA_CHECK(!std::isnan(l[i]) && l[i] != std::numeric_limits<float>::infinity(), "logits: row ",
               row, " has ", l[i], " at token ", i, " (logits must be finite or -inf)");
  }
  FA_CHECK(max_v != -std::numeric_limits<float>::infinity(), "logits: every logit of row ", row,
           " is -inf: no token can be sampled");
  int64_t best = 0;
  while (l[best] != max_v) ++best;  // the lowest id among ties
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

// Tokens per block of the draw's two-level search.
constexpr int64_t kBlock = 256;

struct RowScratch {
  std::vector<float> w, kept_w;
  std::vector<double> block_sum;
  cpu::Candidates cand;
};

int32_t sample_row(const float* logits, int64_t V, const SamplingParams& p, uint64_t step,
                   int64_t row, RowScratch& s) {
  const int64_t argmax = check_and_argmax(logits, V, row);
  if (p.temperature == 0.0f || p.top_k == 1) return static_cast<int32_t>(argmax);

  s.w.resize(static_cast<size_t>(V));
  s.kept_w.resize(static_cast<size_t>(V));
  s.block_sum.resize(static_cast<size_t>((V + kBlock - 1) / kBlock));
  float* w = s.w.data();
  softmax_weights(logits, V, logits[argmax], 1.0f / p.temperature, w);
  // The kept tokens are those ranking no later than `limit` (logit desc, id asc); tokens of zero
  // weight (masked, or underflowed) cannot be drawn whatever the limit.
  cpu::Rank limit{-std::numeric_limits<float>::infinity(), std::numeric_limits<int32_t>::max()};
  if (p.top_k > 0) {
    s.cand.gather(logits, w, V, limit);
    if (static_cast<size_t>(p.top_k) < s.cand.n) limit = cpu::select_prefix(s.cand, p.top_k, true);
  }
  if (p.top_p < 1.0f) {
    s.cand.gather(logits, w, V, limit);
    double mass = 0.0;
    const float* cw = s.cand.weight.data();
#pragma omp simd reduction(+ : mass)
    for (size_t i = 0; i < s.cand.n; ++i) mass += cw[i];
    limit = cpu::select_prefix(s.cand, static_cast<double>(p.top_p) * mass, false);
  }
  // The draw walks the kept tokens in id order, so it depends only on the kept set. Weights of
  // kept tokens go to a masked copy summed per block of kBlock tokens (vectorised); the draw
  // finds its block from the block sums, then its token inside the block.
  const float lim_logit = limit.logit;
  const int32_t lim_id = limit.id;
  float* kw = s.kept_w.data();
#pragma omp simd
  for (int32_t i = 0; i < static_cast<int32_t>(V); ++i) {
    const bool kept = (logits[i] > lim_logit) | ((logits[i] == lim_logit) & (i <= lim_id));
    kw[i] = kept ? w[i] : 0.0f;
  }
  const int64_t blocks = (V + kBlock - 1) / kBlock;
  double* bsum = s.block_sum.data();
  double total = 0.0;
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t end = std::min(V, (b + 1) * kBlock);
    double sum = 0.0;
#pragma omp simd reduction(+ : sum)
    for (int64_t i = b * kBlock; i < end; ++i) sum += kw[i];
    bsum[b] = sum;
    total += sum;
  }
  const double u = static_cast<double>(uniform_from_counter(p.seed, step)) * total;
  double cum = 0.0;
  int64_t last = argmax;
  for (int64_t b = 0; b < blocks; ++b) {
    if (bsum[b] == 0.0) continue;
    if (u >= cum + bsum[b] && b + 1 < blocks) {
      cum += bsum[b];
      continue;
    }
    // The draw lands in this block (or the mass ran out through rounding: take the last kept).
    const int64_t end = std::min(V, (b + 1) * kBlock);
    for (int64_t i = b * kBlock; i < end; ++i) {
      if (kw[i] == 0.0f) continue;
      cum += kw[i];
      last = i;
      if (u < cum) return static_cast<int32_t>(i);
    }
  }
  return static_cast<int32_t>(last);
}

}  // namespace

void cpu::sample_cpu(const Context& ctx, const Tensor& logits,
                     const std::vector<SamplingParams>& params, const std::vector<uint64_t>& steps,
                     Tensor& out) {
  const int64_t B = logits.size(0), V = logits.size(1);
  const float* lp = logits.data_as<const float>();
  int32_t* op = out.data_as<int32_t>();
  const int64_t ld = logits.stride(0);
  // Each row is independent; an exception inside the parallel region is carried out of it
  // (the first failing row's, whatever the thread count).
  std::vector<std::exception_ptr> errors(static_cast<size_t>(B));
  const int threads = cpu::threads_for(ctx, B * V);
#pragma omp parallel num_threads(threads)
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

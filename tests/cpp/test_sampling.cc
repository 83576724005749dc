// Sampling: greedy, the distribution under temperature, top-k / top-p support, determinism,
// independence from batch composition and threads, bad parameters.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>
#include <vector>

#include "fastattn/core/context.h"
#include "fastattn/kernels/sampling.h"
#include "kernel_test_util.h"
#include "test_util.h"

using namespace fastattn;
using namespace fastattn::kernels;

namespace {

// Samples one row `draws` times with seeds 0..draws-1 (step fixed); returns the counts per token.
std::vector<int> histogram(const std::vector<float>& logits, SamplingParams p, int draws,
                           int batch = 64) {
  const int64_t V = static_cast<int64_t>(logits.size());
  std::vector<int> counts(V, 0);
  std::vector<float> rows(batch * V);
  for (int b = 0; b < batch; ++b) std::copy(logits.begin(), logits.end(), rows.begin() + b * V);
  std::vector<int32_t> out(batch);
  for (int start = 0; start < draws; start += batch) {
    const int n = std::min(batch, draws - start);
    std::vector<SamplingParams> params(n, p);
    for (int b = 0; b < n; ++b) params[b].seed = static_cast<uint64_t>(start + b);
    std::fill(out.begin(), out.end(), -7);
    Tensor out_t(out.data(), DType::kInt32, {n});
    sample(cpu_context(), Tensor(rows.data(), DType::kFloat32, {n, V}), params,
           std::vector<uint64_t>(n, 11), out_t);
    for (int b = 0; b < n; ++b) {
      CHECK(out[b] >= 0 && out[b] < V);
      if (out[b] >= 0 && out[b] < V) ++counts[out[b]];
    }
  }
  return counts;
}

// softmax(logits / T) restricted to `keep` (others 0), renormalised, in float64.
std::vector<double> expected_probs(const std::vector<float>& logits, double T,
                                   const std::vector<bool>& keep) {
  double m = -1e300;
  for (size_t i = 0; i < logits.size(); ++i)
    if (keep[i]) m = std::max(m, static_cast<double>(logits[i]));
  std::vector<double> p(logits.size(), 0.0);
  double s = 0;
  for (size_t i = 0; i < logits.size(); ++i)
    if (keep[i]) s += p[i] = std::exp((logits[i] - m) / T);
  for (double& v : p) v /= s;
  return p;
}

// Pearson chi-square of counts against probabilities (tokens with p = 0 must have no count).
double chi_square(const std::vector<int>& counts, const std::vector<double>& p, int draws) {
  double chi = 0;
  for (size_t i = 0; i < p.size(); ++i) {
    if (p[i] == 0) {
      if (counts[i] != 0) return 1e30;
      continue;
    }
    const double e = p[i] * draws;
    chi += (counts[i] - e) * (counts[i] - e) / e;
  }
  return chi;
}

// The k most likely tokens (ties to the lower id).
std::vector<bool> top_k_set(const std::vector<float>& l, int k) {
  std::vector<int> idx(l.size());
  std::iota(idx.begin(), idx.end(), 0);
  std::stable_sort(idx.begin(), idx.end(), [&](int a, int b) { return l[a] > l[b]; });
  std::vector<bool> keep(l.size(), false);
  for (int i = 0; i < k && i < static_cast<int>(l.size()); ++i) keep[idx[i]] = true;
  return keep;
}

// The nucleus: most likely tokens until their mass reaches top_p (the crossing token included).
std::vector<bool> nucleus(const std::vector<float>& l, double T, double top_p) {
  const std::vector<double> p = expected_probs(l, T, std::vector<bool>(l.size(), true));
  std::vector<int> idx(l.size());
  std::iota(idx.begin(), idx.end(), 0);
  std::stable_sort(idx.begin(), idx.end(), [&](int a, int b) { return l[a] > l[b]; });
  std::vector<bool> keep(l.size(), false);
  double cum = 0;
  for (int i : idx) {
    keep[i] = true;
    cum += p[i];
    if (cum >= top_p) break;
  }
  return keep;
}

}  // namespace

TEST(greedy_is_argmax_lowest_id_on_ties) {
  const int64_t B = 4, V = 1000;
  std::vector<float> logits = fa_test::randn(B * V, 1);
  logits[0 * V + 17] = 9.0f;
  logits[1 * V + 500] = 9.0f;
  logits[1 * V + 20] = 9.0f;  // tie: id 20 wins
  logits[2 * V + 999] = 9.0f;
  logits[3 * V + 3] = -std::numeric_limits<float>::infinity();
  std::vector<int32_t> out(B, -7);
  std::vector<SamplingParams> params(B);
  params[3].top_k = 1;  // top_k = 1 is greedy whatever the temperature
  params[3].temperature = 5.0f;
  Tensor ot(out.data(), DType::kInt32, {B});
  sample(cpu_context(), Tensor(logits.data(), DType::kFloat32, {B, V}), params,
         std::vector<uint64_t>(B, 0), ot);
  CHECK(out[0] == 17 && out[1] == 20 && out[2] == 999);
  const auto it = std::max_element(logits.begin() + 3 * V, logits.begin() + 4 * V);
  CHECK(out[3] == static_cast<int32_t>(it - (logits.begin() + 3 * V)));
}

TEST(temperature_distribution_matches_softmax) {
  const std::vector<float> logits = {1.0f, 2.0f, 0.5f, -1.0f, 1.5f, 0.0f};
  const int draws = 30000;
  for (float T : {0.7f, 1.0f, 2.5f}) {
    SamplingParams p;
    p.temperature = T;
    const auto counts = histogram(logits, p, draws);
    const auto prob = expected_probs(logits, T, std::vector<bool>(logits.size(), true));
    // 5 degrees of freedom: P(chi2 > 30) ~ 1.5e-5 for a correct sampler; a wrong temperature
    // (e.g. T = 1 instead of 0.7) gives chi2 in the hundreds at this many draws.
    const double chi = chi_square(counts, prob, draws);
    CHECK_MSG(chi < 30.0, "T=" + std::to_string(T) + ": chi-square " + std::to_string(chi));
    const auto wrong = expected_probs(logits, T * 1.3, std::vector<bool>(logits.size(), true));
    CHECK(chi_square(counts, wrong, draws) > 60.0);  // the test can tell temperatures apart
  }
}

TEST(top_k_support_and_distribution) {
  std::vector<float> logits = fa_test::randn(200, 7, 1.5f);
  for (int k : {2, 5, 50}) {
    SamplingParams p;
    p.temperature = 1.0f;
    p.top_k = k;
    const int draws = 6000;
    const auto counts = histogram(logits, p, draws);
    const auto keep = top_k_set(logits, k);
    int outside = 0;
    for (size_t i = 0; i < logits.size(); ++i)
      if (!keep[i]) outside += counts[i];
    CHECK_MSG(outside == 0, "top_k=" + std::to_string(k) + ": sampled outside the top k");
    if (k <= 5) {
      const double chi = chi_square(counts, expected_probs(logits, 1.0, keep), draws);
      CHECK_MSG(chi < 30.0, "top_k=" + std::to_string(k) + ": chi-square " + std::to_string(chi));
    }
  }
}

TEST(top_p_support_and_distribution) {
  // A large vocabulary so the nucleus search has to grow past its first guess.
  std::vector<float> big = fa_test::randn(5000, 9, 0.5f);
  for (double top_p : {0.05, 0.5, 0.9, 0.999}) {
    SamplingParams p;
    p.temperature = 0.8f;
    p.top_p = static_cast<float>(top_p);
    const auto counts = histogram(big, p, 2000);
    const auto keep = nucleus(big, 0.8, static_cast<float>(top_p));
    int outside = 0, kept = 0;
    for (size_t i = 0; i < big.size(); ++i) {
      if (!keep[i]) outside += counts[i];
      kept += keep[i];
    }
    CHECK_MSG(outside == 0, "top_p=" + std::to_string(top_p) + ": sampled outside the nucleus of " +
                                std::to_string(kept));
  }
  // Distribution inside a small nucleus.
  const std::vector<float> logits = {3.0f, 2.5f, 2.0f, 1.0f, 0.0f, -1.0f, -2.0f};
  SamplingParams p;
  p.temperature = 1.0f;
  p.top_p = 0.8f;
  const int draws = 20000;
  const auto counts = histogram(logits, p, draws);
  const auto keep = nucleus(logits, 1.0, 0.8f);
  const double chi = chi_square(counts, expected_probs(logits, 1.0, keep), draws);
  CHECK_MSG(chi < 30.0, "top_p=0.8: chi-square " + std::to_string(chi));
  // A tiny top_p keeps only the most likely token.
  p.top_p = 1e-6f;
  const auto one = histogram(logits, p, 500);
  CHECK(one[0] == 500);
}

TEST(combined_filters) {
  std::vector<float> logits = fa_test::randn(1000, 13, 2.0f);
  SamplingParams p;
  p.temperature = 1.3f;
  p.top_k = 40;
  p.top_p = 0.7f;
  const auto counts = histogram(logits, p, 3000);
  // top-k first, then the nucleus of the renormalised top-k distribution.
  const auto kset = top_k_set(logits, 40);
  std::vector<float> masked(logits.size(), -1e30f);
  for (size_t i = 0; i < logits.size(); ++i)
    if (kset[i]) masked[i] = logits[i];
  const auto keep = nucleus(masked, 1.3, 0.7f);
  int outside = 0;
  for (size_t i = 0; i < logits.size(); ++i)
    if (!keep[i] || !kset[i]) outside += counts[i];
  CHECK(outside == 0);
}

TEST(ties_rank_by_lower_id) {
  // 200 equal logits (plus a few lower ones): the top 10, and the 25% nucleus, are the lowest ids.
  std::vector<float> logits(230, 0.5f);
  for (int i = 200; i < 230; ++i) logits[i] = -1.0f;
  SamplingParams k;
  k.temperature = 1.0f;
  k.top_k = 10;
  const auto ck = histogram(logits, k, 2000);
  int outside = 0, inside = 0;
  for (int i = 0; i < 230; ++i) (i < 10 ? inside : outside) += ck[i];
  CHECK(outside == 0 && inside == 2000);
  for (int i = 0; i < 10; ++i) CHECK(ck[i] > 0);
  SamplingParams p;
  p.temperature = 1.0f;
  p.top_p = 0.25f;  // mass of 200 equal tokens out of ~200 + 30 e^-1.5: the first ~57
  const auto cp = histogram(logits, p, 3000);
  const auto keep = nucleus(logits, 1.0, 0.25f);
  int kept = 0;
  for (int i = 0; i < 230; ++i) {
    kept += keep[i];
    if (!keep[i]) CHECK(cp[i] == 0);
  }
  CHECK(kept > 40 && kept < 70);
  for (int i = 0; i < kept; ++i) CHECK(keep[i]);  // the nucleus is the lowest ids
}

TEST(masked_logits_never_sampled) {
  std::vector<float> logits(64, -std::numeric_limits<float>::infinity());
  logits[5] = 0.0f;
  logits[40] = 0.3f;
  logits[63] = -0.2f;
  SamplingParams p;
  p.temperature = 1.0f;
  const auto counts = histogram(logits, p, 3000);
  CHECK(counts[5] + counts[40] + counts[63] == 3000);
  CHECK(counts[5] > 0 && counts[40] > 0 && counts[63] > 0);
}

TEST(same_seed_same_tokens_whatever_the_batch) {
  const int64_t V = 3000;
  std::vector<float> logits = fa_test::randn(8 * V, 21, 2.0f);
  std::vector<SamplingParams> params(8);
  std::vector<uint64_t> steps(8);
  for (int b = 0; b < 8; ++b) {
    params[b].temperature = 0.5f + 0.2f * b;
    params[b].top_k = (b % 3) * 20;
    params[b].top_p = b % 2 ? 0.9f : 1.0f;
    params[b].seed = 1000 + b;
    steps[b] = static_cast<uint64_t>(b * 7);
  }
  std::vector<int32_t> a(8, -1), c(8, -1), single(1, -1);
  Tensor at(a.data(), DType::kInt32, {8}), ct(c.data(), DType::kInt32, {8});
  Tensor lt(logits.data(), DType::kFloat32, {8, V});
  sample(cpu_context(1), lt, params, steps, at);
  sample(cpu_context(2), lt, params, steps, ct);
  CHECK(a == c);                 // thread count does not matter
  for (int b = 0; b < 8; ++b) {  // each row alone gives the same token as inside the batch
    Tensor st(single.data(), DType::kInt32, {1});
    sample(cpu_context(), Tensor(logits.data() + b * V, DType::kFloat32, {1, V}), {params[b]},
           {steps[b]}, st);
    CHECK(single[0] == a[b]);
  }
  // Different steps give different draws (not all equal over many steps).
  std::vector<int32_t> seen;
  for (uint64_t s = 0; s < 20; ++s) {
    Tensor st(single.data(), DType::kInt32, {1});
    SamplingParams q;
    q.temperature = 1.0f;
    q.seed = 5;
    sample(cpu_context(), Tensor(logits.data(), DType::kFloat32, {1, V}), {q}, {s}, st);
    seen.push_back(single[0]);
  }
  std::sort(seen.begin(), seen.end());
  CHECK(std::unique(seen.begin(), seen.end()) - seen.begin() > 10);
}

TEST(uniform_from_counter_is_uniform_and_deterministic) {
  const int n = 200000;
  double sum = 0;
  std::vector<int> bins(10, 0);
  for (int i = 0; i < n; ++i) {
    const float u = uniform_from_counter(42, static_cast<uint64_t>(i));
    CHECK(u >= 0.0f && u < 1.0f);
    sum += u;
    ++bins[std::min(9, static_cast<int>(u * 10))];
  }
  CHECK_NEAR(sum / n, 0.5, 0.005);
  for (int b : bins) CHECK_NEAR(b, n / 10, 600);  // ~4.5 sigma
  CHECK(uniform_from_counter(1, 2) == uniform_from_counter(1, 2));
  CHECK(uniform_from_counter(1, 2) != uniform_from_counter(2, 1));
}

TEST(bad_parameters) {
  std::vector<float> logits = {0.1f, 0.2f, 0.3f};
  std::vector<int32_t> out(1);
  const Context ctx = cpu_context();
  Tensor lt(logits.data(), DType::kFloat32, {1, 3});
  Tensor ot(out.data(), DType::kInt32, {1});
  auto with = [](float t, int k, float p) {
    SamplingParams s;
    s.temperature = t;
    s.top_k = k;
    s.top_p = p;
    return std::vector<SamplingParams>{s};
  };
  const std::vector<uint64_t> step = {0};
  sample(ctx, lt, with(1.0f, 2, 0.9f), step, ot);  // the good call works
  CHECK(out[0] >= 1);                              // top-2 of three
  CHECK_THROWS(sample(ctx, lt, with(-0.5f, 0, 1.0f), step, ot), InvalidArgument,
               "temperature -0.5");
  CHECK_THROWS(sample(ctx, lt, with(NAN, 0, 1.0f), step, ot), InvalidArgument, "temperature");
  CHECK_THROWS(sample(ctx, lt, with(1.0f, -1, 1.0f), step, ot), InvalidArgument, "top_k -1");
  CHECK_THROWS(sample(ctx, lt, with(1.0f, 0, 0.0f), step, ot), InvalidArgument, "top_p 0");
  CHECK_THROWS(sample(ctx, lt, with(1.0f, 0, 1.5f), step, ot), InvalidArgument, "top_p 1.5");
  CHECK_THROWS(sample(ctx, lt, with(1.0f, 0, 1.0f), {0, 1}, ot), InvalidArgument,
               "2 steps for a batch of 1");
  CHECK_THROWS(sample(ctx, lt, {}, step, ot), InvalidArgument, "0 parameter sets for a batch of 1");
  logits[1] = NAN;
  CHECK_THROWS(sample(ctx, lt, with(0.0f, 0, 1.0f), step, ot), InvalidArgument,
               "logits: row 0 has nan at token 1");
  logits[1] = INFINITY;
  CHECK_THROWS(sample(ctx, lt, with(1.0f, 0, 1.0f), step, ot), InvalidArgument,
               "logits: row 0 has inf");
  std::fill(logits.begin(), logits.end(), -INFINITY);
  CHECK_THROWS(sample(ctx, lt, with(1.0f, 0, 1.0f), step, ot), InvalidArgument,
               "every logit of row 0 is -inf");
  Tensor o64(out.data(), DType::kInt64, {1});
  CHECK_THROWS(sample(ctx, lt, with(1.0f, 0, 1.0f), step, o64), InvalidArgument,
               "out: expected dtype int32");
  CHECK_THROWS(sample(ctx, fa_test::on_cuda(lt), with(1.0f, 0, 1.0f), step, ot), InvalidArgument,
               "logits: expected a CPU tensor");
}

TEST_MAIN()

// Top-k / top-p selection for the sampler (internal): finds the last token of the most-likely
// prefix whose weight reaches a target, in expected O(V), without sorting the vocabulary.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace fastattn::kernels::cpu {

// A position in the "more likely first" order: logit descending, then id ascending (a strict
// total order, so "the k best" and "the nucleus" are well-defined sets).
struct Rank {
  float logit;
  int32_t id;
};
// True when token (logit, id) comes no later than r in that order: the kept set of a threshold.
inline bool kept_by(float logit, int32_t id, Rank r) {
  return logit > r.logit || (logit == r.logit && id <= r.id);
}

// Candidate tokens in structure-of-arrays form; the selection compacts them in place.
struct Candidates {
  std::vector<float> logit, weight;
  std::vector<int32_t> id;
  size_t n = 0;
  // Fills with the tokens i < V whose weight w[i] > 0 and that rank no later than `limit`.
  void gather(const float* logits, const float* w, int64_t V, Rank limit);
};

// The last token of the shortest most-likely prefix of c whose total weight reaches target
// (unit weights when `count` is set, so target = k selects the top k). Destroys c's contents.
// If rounding leaves the target unreached, returns the least likely candidate. c.n must be > 0.
Rank select_prefix(Candidates& c, double target, bool count);

}  // namespace fastattn::kernels::cpu

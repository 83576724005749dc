// Token sampling from logits: greedy, temperature, top-k, top-p; seeded and reproducible.
#pragma once

#include <cstdint>
#include <vector>

#include "fastattn/core/context.h"
#include "fastattn/core/tensor.h"

namespace fastattn::kernels {

struct SamplingParams {
  float temperature = 0.0f;  // 0 = greedy (argmax; ties go to the lowest id)
  int top_k = 0;             // 0 = no top-k limit
  float top_p = 1.0f;        // 1 = no nucleus limit
  uint64_t seed = 0;
};

// The random draw for a row depends only on (seed, step): the same request with the same seed
// gives the same tokens whatever the batch, thread count or machine.
// logits: float32 [B, V]; params and steps: B entries; out: int32 [B].
// Filters apply in Hugging Face's order: temperature, top-k, then top-p over the renormalised
// top-k distribution (the token that crosses top_p is kept). -inf logits are masked tokens;
// NaN or +inf logits, a row of only -inf, temperature < 0, top_k < 0 or top_p outside (0, 1]
// throw InvalidArgument.
void sample(const Context& ctx, const Tensor& logits, const std::vector<SamplingParams>& params,
            const std::vector<uint64_t>& steps, Tensor& out);

// Uniform float in [0, 1) from a counter-based generator keyed by (seed, counter).
float uniform_from_counter(uint64_t seed, uint64_t counter);

}  // namespace fastattn::kernels

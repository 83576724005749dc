// Token sampling from logits: greedy, temperature, top-k, top-p; seeded and reproducible.
#pragma once

#include <cstdint>
#include <vector>

#include "fastattn/core/context.h"
#include "fastattn/core/tensor.h"
#include "fastattn/kernels/sample_row.h"

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
// top-k distribution (the token that crosses top_p is kept). -inf logits are masked tokens.
// temperature < 0 (or not finite), top_k < 0 or top_p outside (0, 1] throw InvalidArgument.
// CPU: NaN or +inf logits, or a row of only -inf, throw InvalidArgument.
// CUDA (logits and out on one GPU; params and steps stay host vectors): one thread block per row
// on ctx.stream, no host sync. The host checks shapes and parameters as above but cannot see the
// logits' values, so on the GPU NaN and +inf logits are masked like -inf, and a row with no
// finite logit gives token 0. Otherwise the GPU picks the CPU's token: the same argmax (ties to
// the lowest id), kept set and draw, with u = uniform_from_counter(seed, step) computed on the
// host. Only the float rounding of exp() and of the sums differs (a few ulp); it can change the
// token only when the draw or the top-p target falls within that rounding of a boundary between
// two tokens (probability ~1e-7 per draw). Top-k / top-p find their threshold by a radix search
// over the logits' bits with block reductions (no sort of the vocabulary).
void sample(const Context& ctx, const Tensor& logits, const std::vector<SamplingParams>& params,
            const std::vector<uint64_t>& steps, Tensor& out);

// The GPU sampler's row for request parameters p at draw number `step`: u =
// uniform_from_counter(seed, step), 1 / temperature, greedy as top_k = 1. Checks p as sample() does.
SampleRow prepare_sample_row(const SamplingParams& p, uint64_t step);

// sample() on the GPU with the rows' parameters read from device memory at run time: `rows` is a
// device buffer of B SampleRow (prepare_sample_row) viewed as int32 [B, 4]. Nothing that changes
// between decode steps is baked into the launch, so it can be captured in a CUDA graph and
// replayed after new rows are uploaded. GPU tensors only (InvalidArgument otherwise).
void sample_prepared(const Context& ctx, const Tensor& logits, const Tensor& rows, Tensor& out);

// Uniform float in [0, 1) from a counter-based generator keyed by (seed, counter).
float uniform_from_counter(uint64_t seed, uint64_t counter);

}  // namespace fastattn::kernels

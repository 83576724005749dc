// The CPU implementation of rotary embeddings: kernels/rope.h's entry points (kernels/rope.cc) call
// these for tensors in host memory. They check their own arguments.
#pragma once

#include <functional>

#include "fastattn/kernels/rope.h"

namespace fastattn::kernels::cpu {

void apply_rope_cpu(const Context& ctx, const RopeParams& p, Tensor& x, const Tensor& positions,
                    int64_t seq_len);

// Called for each token t once its rows are rotated, inside the parallel loop over tokens.
using TokenHook = std::function<void(int64_t t)>;

// apply_rope_cpu on q and k [T, H, D] (the same tokens and head dim) in one pass over the tokens:
// each token's cos / sin serve both, then `after(t)` runs (the fused KV-cache write). Every
// argument is checked before anything is rotated.
void apply_rope_qk_cpu(const Context& ctx, const RopeParams& p, Tensor& q, Tensor& k,
                       const Tensor& positions, int64_t seq_len, const TokenHook& after);

}  // namespace fastattn::kernels::cpu

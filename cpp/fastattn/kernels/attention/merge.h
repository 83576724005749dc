// Merging two attention results over disjoint key sets of the same queries (the two tiers of a
// spilled KV cache, or any split of the keys), by their log-sum-exps:
//   out = (e^lse_a * out_a + e^lse_b * out_b) / (e^lse_a + e^lse_b)
// A row whose two lse are both -inf (no visible key) gets zeros.
#pragma once

#include "fastattn/core/context.h"
#include "fastattn/core/tensor.h"

namespace fastattn::kernels {

// out_a, out_b, out: [T, H, D], each of any float dtype (token and head dims may be strided,
// last dim contiguous); lse_a, lse_b: float32 [H, T] (natural log, fmha_forward's layout).
// out may alias out_a or out_b. lse_out (optional, float32 [H, T], may alias lse_a or lse_b)
// gets the merged log-sum-exp, so parts can be merged one at a time. All on one device (the
// CPU or one GPU, on ctx.stream).
void merge_attention(const Context& ctx, const Tensor& out_a, const Tensor& lse_a,
                     const Tensor& out_b, const Tensor& lse_b, Tensor& out,
                     Tensor* lse_out = nullptr);

}  // namespace fastattn::kernels

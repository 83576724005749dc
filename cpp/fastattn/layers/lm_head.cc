#include "fastattn/layers/lm_head.h"

#include "fastattn/core/error.h"
#include "fastattn/kernels/gemm.h"
#include "fastattn/layers/parallel.h"

namespace fastattn::layers {

LmHead::LmHead(const LmHeadParams& p, const LmHeadWeights& w) : p_(p), w_(w) {
  FA_CHECK(w.weight.size(0) >= 1 && p.vocab_size >= 1, "LM head: empty vocabulary");
}

void LmHead::forward(const Context& ctx, Tensor& hidden, OwnedTensor& shard_scratch,
                     Tensor& logits) const {
  check_shape(logits, "logits", {hidden.size(0), p_.vocab_size});
  kernels::norm(ctx, p_.norm, hidden, w_.final_norm.weight, w_.final_norm.bias, hidden);
  if (ctx.comm == nullptr) {
    // One rank holds the whole (padded) vocabulary: skip the padding rows.
    const Tensor w = w_.weight.slice(0, 0, p_.vocab_size);
    kernels::linear(ctx, hidden, w, Tensor(), logits);
    return;
  }
  shard_scratch.resize(DType::kFloat32, {hidden.size(0), w_.weight.size(0)});
  kernels::linear(ctx, hidden, w_.weight, Tensor(), shard_scratch.view());
  gather_vocab(ctx, shard_scratch.view(), logits);
}

}  // namespace fastattn::layers

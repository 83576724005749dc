// LmHead: final norm and the projection to vocabulary logits. The weight is lm_head.weight or,
// with tied embeddings, the embedding table. On one rank only the real vocab_size rows are used
// (padding rows never produce logits); on several, each rank's shard is gathered (gather_vocab).
#pragma once

#include "fastattn/core/allocator.h"
#include "fastattn/core/context.h"
#include "fastattn/kernels/norm.h"
#include "fastattn/layers/decoder_layer.h"

namespace fastattn::layers {

struct LmHeadParams {
  kernels::NormParams norm;
  int64_t vocab_size = 0;  // real vocabulary (logits columns)
};

struct LmHeadWeights {
  NormWeights final_norm;
  Tensor weight;  // [Vr, H]
};

class LmHead {
 public:
  LmHead(const LmHeadParams& p, const LmHeadWeights& w);

  // hidden: float32 [R, H] residual-stream rows (modified: normalised in place);
  // logits: float32 [R, vocab_size], rows may be strided.
  void forward(const Context& ctx, Tensor& hidden, OwnedTensor& shard_scratch,
               Tensor& logits) const;

 private:
  LmHeadParams p_;
  LmHeadWeights w_;
};

}  // namespace fastattn::layers

// Embedding: token ids -> float32 hidden states. On a tensor-parallel rank the table is a vocab
// shard (rows vocab_start ..); ids outside it give zero rows and the ranks' outputs are summed.
#pragma once

#include "fastattn/core/context.h"
#include "fastattn/core/tensor.h"

namespace fastattn::layers {

struct EmbeddingWeights {
  Tensor table;  // [Vr, H], any float dtype
  int64_t vocab_start = 0;
  bool vocab_parallel = false;  // true when tp_size > 1
};

class Embedding {
 public:
  explicit Embedding(const EmbeddingWeights& w) : w_(w) {}
  // ids: int32 [T]; out: float32 [T, H].
  void forward(const Context& ctx, const Tensor& ids, Tensor& out) const;
  const Tensor& table() const { return w_.table; }

 private:
  EmbeddingWeights w_;
};

}  // namespace fastattn::layers

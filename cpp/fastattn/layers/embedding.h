// Embedding: token ids -> hidden states (float32 on the CPU, the activation dtype on a GPU). On a
// tensor-parallel rank the table is a vocab shard (rows vocab_start ..); ids outside it give zero
// rows and the ranks' outputs are summed. With learned absolute positions (GPT-2 style) the
// replicated position table's row at each token's position is added after that sum, so once.
#pragma once

#include "fastattn/core/allocator.h"
#include "fastattn/core/context.h"
#include "fastattn/core/tensor.h"

namespace fastattn::layers {

struct EmbeddingWeights {
  Tensor table;  // [Vr, H], any float dtype
  int64_t vocab_start = 0;
  bool vocab_parallel = false;  // true when tp_size > 1
  Tensor position_table;        // [max_positions, H], replicated; undefined = none (rotary models)
};

class Embedding {
 public:
  explicit Embedding(const EmbeddingWeights& w) : w_(w) {}
  // ids, positions: int32 [T] (positions used only with a position table); out: [T, H].
  // position_rows: scratch for the looked-up position rows (grown to [T, H] as needed).
  // A position outside the table throws InvalidArgument on the CPU (kernels::embedding_lookup);
  // callers keep positions below max_position_embeddings (the session refuses longer sequences).
  void forward(const Context& ctx, const Tensor& ids, const Tensor& positions, Tensor& out,
               OwnedTensor& position_rows) const;
  const Tensor& table() const { return w_.table; }

 private:
  EmbeddingWeights w_;
};

}  // namespace fastattn::layers

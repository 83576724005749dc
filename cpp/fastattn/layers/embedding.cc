#include "fastattn/layers/embedding.h"

#include "fastattn/kernels/embedding.h"
#include "fastattn/layers/parallel.h"

namespace fastattn::layers {

void Embedding::forward(const Context& ctx, const Tensor& ids, Tensor& out) const {
  kernels::embedding_lookup(ctx, ids, w_.table, out, w_.vocab_start, w_.vocab_parallel);
  if (w_.vocab_parallel) all_reduce_sum(ctx, out);
}

}  // namespace fastattn::layers

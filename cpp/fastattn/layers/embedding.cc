#include "fastattn/layers/embedding.h"

#include "fastattn/kernels/activation.h"
#include "fastattn/kernels/embedding.h"
#include "fastattn/layers/parallel.h"

namespace fastattn::layers {

void Embedding::forward(const Context& ctx, const Tensor& ids, const Tensor& positions, Tensor& out,
                        OwnedTensor& position_rows) const {
  kernels::embedding_lookup(ctx, ids, w_.table, out, w_.vocab_start, w_.vocab_parallel);
  if (w_.vocab_parallel) all_reduce_sum(ctx, out);
  if (!w_.position_table.defined()) return;
  // After the reduction: every rank holds the whole position table, so the rows are added once.
  position_rows.resize(out.dtype(), {out.size(0), out.size(1)});
  kernels::embedding_lookup(ctx, positions, w_.position_table, position_rows.view());
  kernels::add(ctx, out, position_rows.view(), out);
}

}  // namespace fastattn::layers

// Token embedding lookup.
#pragma once

#include "fastattn/core/context.h"
#include "fastattn/core/tensor.h"

namespace fastattn::kernels {

// out[T, H] (float32) = table[ids[t] - vocab_start] for ids int32/int64 [T], table [V, H] of any
// float dtype. With vocab_parallel = false every id must lie in [0, V): an id outside throws
// InvalidArgument naming the id and its position. With vocab_parallel = true (a tensor-parallel
// shard holding rows [vocab_start, vocab_start + V)) ids outside the shard give zero rows.
// Negative ids throw in both modes; nothing is written when an id is rejected.
void embedding_lookup(const Context& ctx, const Tensor& ids, const Tensor& table, Tensor& out,
                      int64_t vocab_start = 0, bool vocab_parallel = false);

}  // namespace fastattn::kernels

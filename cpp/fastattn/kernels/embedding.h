// Token embedding lookup.
#pragma once

#include "fastattn/core/context.h"
#include "fastattn/core/tensor.h"

namespace fastattn::kernels {

// out[T, H] = table[ids[t] - vocab_start] for ids int32/int64 [T] (contiguous), table [V, H] of
// any float dtype (last dim contiguous). Runs on the device the tensors live on (all on one
// device, else InvalidArgument naming the tensor).
// CPU: out float32. With vocab_parallel = false every id must lie in [vocab_start,
// vocab_start + V): an id outside throws InvalidArgument naming the id and its position. With
// vocab_parallel = true (a tensor-parallel shard holding rows [vocab_start, vocab_start + V))
// ids outside the shard give zero rows. Negative ids throw in both modes; nothing is written
// when an id is rejected.
// CUDA: out of the table's dtype or float32. The id values live in GPU memory and are never read
// on the host (that would synchronise), so they cannot be checked: every id outside the table's
// rows (negative, or outside [vocab_start, vocab_start + V)) gives a zero row, in both modes.
// Keeping ids in range is the caller's responsibility. Enqueued on ctx.stream.
void embedding_lookup(const Context& ctx, const Tensor& ids, const Tensor& table, Tensor& out,
                      int64_t vocab_start = 0, bool vocab_parallel = false);

// The checks the CPU and CUDA lookups share: ids int32 / int64 [T], contiguous; table [V, H] of
// a float dtype with its last dimension contiguous.
void check_embedding_inputs(const Tensor& ids, const Tensor& table);

}  // namespace fastattn::kernels

// The tensor-parallel seams of the model. Row-parallel projections (attention O, FFN down) and the
// vocab-parallel embedding produce partial sums that are reduced in exactly one place
// (all_reduce_sum); the vocab-parallel LM head produces a shard of the logits that is gathered in
// exactly one place (gather_vocab). With Context::comm null (one rank) both are no-ops; a
// communicator (comm/, a later issue) plugs in here.
#pragma once

#include "fastattn/core/context.h"
#include "fastattn/core/tensor.h"

namespace fastattn::layers {

// partial [T, H] float32: summed over ranks in place.
void all_reduce_sum(const Context& ctx, Tensor& partial);

// y = x @ w^T + bias for a row-parallel weight: the bias is added once, after the reduction.
void row_parallel_linear(const Context& ctx, const Tensor& x, const Tensor& w, const Tensor& bias,
                         Tensor& y);

// local [R, Vr] float32 logits of this rank's vocab shard -> full [R, vocab] (padding dropped).
void gather_vocab(const Context& ctx, const Tensor& local, Tensor& full);

}  // namespace fastattn::layers

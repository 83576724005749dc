// The tensor-parallel seams of the model. Row-parallel projections (attention O, FFN down) and the
// vocab-parallel embedding produce partial sums that are reduced in exactly one place
// (all_reduce_sum / row_parallel_linear); the vocab-parallel LM head produces a shard of the
// logits that is gathered in exactly one place (gather_vocab). With Context::comm null (one rank)
// they are plain local operations; with a communicator (comm/) they run over the ranks.
#pragma once

#include "fastattn/comm/communicator.h"
#include "fastattn/core/context.h"
#include "fastattn/core/tensor.h"

namespace fastattn::layers {

// y = all_reduce_sum(x @ w^T) through kernels::linear tiles (no bias: a row-parallel bias is
// added once, after the reduction), tiled as comm/tiled_all_reduce.h's plan_tiles(comm, rows,
// cols of y, cols of x) says.
void linear_all_reduce(const Context& ctx, comm::Communicator& comm, const Tensor& x,
                       const Tensor& w, Tensor& y);

// partial [T, H] (contiguous): summed over ranks in place.
void all_reduce_sum(const Context& ctx, Tensor& partial);

// y = x @ w^T + bias for a row-parallel weight w [H, K / tp]: the partial products are summed
// over the ranks, with the GEMM split into row tiles whose all-reduce overlaps the next tile's
// GEMM (tiling-AllReduce, comm/tiled_all_reduce.h; the tile count and the overlap switch are the
// communicator's tiling() options). The bias is added once, after the reduction. y contiguous.
void row_parallel_linear(const Context& ctx, const Tensor& x, const Tensor& w, const Tensor& bias,
                         Tensor& y);

// local [R, Vr] logits of this rank's vocab shard (contiguous) -> full [R, vocab] (rows may be
// strided; padding columns past vocab dropped). Every rank gets the same full logits, so every
// rank samples the same token.
void gather_vocab(const Context& ctx, const Tensor& local, Tensor& full);

}  // namespace fastattn::layers

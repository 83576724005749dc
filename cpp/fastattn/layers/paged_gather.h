// Gathering paged KV into contiguous staging, so the tensor-core prefill kernel (which reads
// contiguous K/V) can serve chunked prefill over a cache: a GPU session's later prefill chunks
// gather the device part of each sequence, and the streaming spill path gathers host blocks.
#pragma once

#include <cstdint>

#include "fastattn/core/context.h"
#include "fastattn/core/tensor.h"

namespace fastattn::layers {

// staging[cu[b] .. cu[b] + lens[b]) = the first lens[b] tokens of the blocks table[b * stride ..]
// of `pool` ([num_blocks, block_size, Hk, D]), sequence after sequence, where cu holds the prefix
// sums of lens. Runs of consecutive block ids are one copy (spills and fresh pools hand out
// consecutive ids, so long contexts are a handful of copies). table, lens: host arrays. The
// staging tensor ([sum lens, Hk, D], the pool's dtype) may live on another device than the pool.
void gather_paged(const Context& ctx, const Tensor& pool, const int32_t* table,
                  int64_t table_stride, const int32_t* lens, int num_seqs, Tensor& staging);

}  // namespace fastattn::layers

// Writes the K and V of new tokens into a paged KV cache.
#pragma once

#include "fastattn/core/context.h"
#include "fastattn/core/tensor.h"

namespace fastattn::kernels {

// k_new, v_new: [T, Hk, D] (any float dtype; strided token dim allowed).
// k_cache, v_cache: [num_blocks, block_size, Hk, D] (any float dtype; converted on write).
// V may have its own head size (v_new [T, Hk, Dv] with v_cache [..., Hk, Dv]).
// slot_mapping: int32 [T], slot = block_index * block_size + offset_in_block; -1 skips the token.
// Every slot is checked before anything is written: a slot outside [-1, num_blocks * block_size)
// throws InvalidArgument and leaves the caches untouched.
void kv_cache_write(const Context& ctx, const Tensor& k_new, const Tensor& v_new, Tensor& k_cache,
                    Tensor& v_cache, const Tensor& slot_mapping);

}  // namespace fastattn::kernels

// Writes the K and V of new tokens into a paged KV cache, alone or fused with rotary embedding.
// Runs on the CPU or on CUDA, chosen by the tensors' device (all tensors of a call on one device).
#pragma once

#include <cstdint>

#include "fastattn/core/context.h"
#include "fastattn/core/tensor.h"
#include "fastattn/kernels/rope.h"

namespace fastattn::kernels {
// The checks of a cache write that the CPU and CUDA paths share (dtypes and devices aside):
// slot_mapping int32 [T], contiguous; k_cache [blocks, block_size, Hk, D] as k_new [T, Hk, D];
// v_new [T, Hk, Dv] and v_cache [blocks, block_size, Hk, Dv].
void check_kv_write_shapes(const Tensor& k_new, const Tensor& v_new, const char* v_name,
                           const Tensor& k_cache, const Tensor& v_cache,
                           const Tensor& slot_mapping);

// k_new, v_new: [T, Hk, D] (any float dtype; strided token dim allowed).
// k_cache, v_cache: [num_blocks, block_size, Hk, D] (any float dtype; converted on write).
// V may have its own head size (v_new [T, Hk, Dv] with v_cache [..., Hk, Dv]).
// slot_mapping: int32 [T], slot = block_index * block_size + offset_in_block; -1 skips the token.
// CPU: every slot is checked before anything is written: a slot outside
// [-1, num_blocks * block_size) throws InvalidArgument and leaves the caches untouched.
// CUDA: one kernel on ctx.stream; shapes and dtypes are checked as on the CPU, but slot values
// live on the GPU and are not read by the host (no sync): a slot outside that range is skipped
// like -1, silently. Bytes are converted exactly as on the CPU (one round-to-nearest-even).
void kv_cache_write(const Context& ctx, const Tensor& k_new, const Tensor& v_new, Tensor& k_cache,
                    Tensor& v_cache, const Tensor& slot_mapping);

// Fused attention prologue: apply_rope(p, q, positions, seq_len) and apply_rope(p, k, ...) in
// place, then kv_cache_write(k, v, k_cache, v_cache, slot_mapping) of the rotated k. Shapes:
// q [T, Hq, D], k [T, Hk, D], v [T, Hk, Dv], positions [T], caches as kv_cache_write. Results are
// those of the three calls, bit for bit. CPU: q and k float32 (apply_rope's rule); everything
// is checked before anything is written. CUDA: one kernel (q, k and v may be float32, float16 or
// bfloat16, each rotated value rounded to q's / k's dtype, then the rounded k converted to the
// cache's dtype); slots and positions are not checked (see kv_cache_write and apply_rope).
void rope_kv_cache_write(const Context& ctx, const RopeParams& p, Tensor& q, Tensor& k,
                         const Tensor& v, const Tensor& positions, Tensor& k_cache, Tensor& v_cache,
                         const Tensor& slot_mapping, int64_t seq_len = 0);

}  // namespace fastattn::kernels

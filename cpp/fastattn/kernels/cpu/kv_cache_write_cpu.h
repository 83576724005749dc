// The CPU implementation of the KV-cache write (and its fusion with rotary embeddings):
// kernels/kv_cache_write.h's entry points (kernels/kv_cache_write.cc) call these for tensors in
// host memory. They check their own arguments.
#pragma once

#include "fastattn/kernels/kv_cache_write.h"

namespace fastattn::kernels::cpu {

void kv_cache_write_cpu(const Context& ctx, const Tensor& k_new, const Tensor& v_new,
                        Tensor& k_cache, Tensor& v_cache, const Tensor& slot_mapping);
void rope_kv_cache_write_cpu(const Context& ctx, const RopeParams& p, Tensor& q, Tensor& k,
                             const Tensor& v, const Tensor& positions, Tensor& k_cache,
                             Tensor& v_cache, const Tensor& slot_mapping, int64_t seq_len);

}  // namespace fastattn::kernels::cpu

// CUDA entry points of apply_rope, kv_cache_write and rope_kv_cache_write (internal: called by
// the entry points in kernels/rope.cc and kernels/kv_cache_write.cc when the tensors are on a GPU).
// Shapes, dtypes and devices are checked on the host; index values (positions, slots) are not.
#pragma once

#include <cstdint>

#include "fastattn/core/context.h"
#include "fastattn/core/tensor.h"
#include "fastattn/kernels/rope.h"

namespace fastattn::kernels::cuda {

void apply_rope_cuda(const Context& ctx, const RopeParams& p, Tensor& x, const Tensor& positions,
                     int64_t seq_len);

void kv_cache_write_cuda(const Context& ctx, const Tensor& k_new, const Tensor& v_new,
                         Tensor& k_cache, Tensor& v_cache, const Tensor& slot_mapping);

void rope_kv_cache_write_cuda(const Context& ctx, const RopeParams& p, Tensor& q, Tensor& k,
                              const Tensor& v, const Tensor& positions, Tensor& k_cache,
                              Tensor& v_cache, const Tensor& slot_mapping, int64_t seq_len);

}  // namespace fastattn::kernels::cuda

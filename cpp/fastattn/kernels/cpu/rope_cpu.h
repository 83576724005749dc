// The CPU implementation of rotary embeddings: kernels/rope.h's entry points (kernels/rope.cc) call
// these for tensors in host memory. They check their own arguments.
#pragma once

#include "fastattn/kernels/rope.h"

namespace fastattn::kernels::cpu {

void apply_rope_cpu(const Context& ctx, const RopeParams& p, Tensor& x, const Tensor& positions,
                    int64_t seq_len);

}  // namespace fastattn::kernels::cpu

// The CPU implementation of the embedding lookup: kernels/embedding.h's entry points
// (kernels/embedding.cc) call these for tensors in host memory. They check their own arguments.
#pragma once

#include "fastattn/kernels/embedding.h"

namespace fastattn::kernels::cpu {

void embedding_lookup_cpu(const Context& ctx, const Tensor& ids, const Tensor& table, Tensor& out,
                          int64_t vocab_start, bool vocab_parallel);

}  // namespace fastattn::kernels::cpu

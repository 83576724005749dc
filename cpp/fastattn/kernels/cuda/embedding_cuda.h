// CUDA entry point of embedding_lookup() (kernels/embedding.h), called by the public function
// when the tensors live on a GPU. CUDA specifics are documented in embedding.h.
#pragma once

#include <cstdint>

#include "fastattn/core/context.h"
#include "fastattn/core/tensor.h"

namespace fastattn::kernels::cuda {

void embedding_lookup_cuda(const Context& ctx, const Tensor& ids, const Tensor& table, Tensor& out,
                           int64_t vocab_start, bool vocab_parallel);

}  // namespace fastattn::kernels::cuda

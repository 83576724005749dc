// CPU FlashAttention-2 forward. fmha.cc validates FmhaParams and calls fmha_forward_cpu with the
// shapes it derived; nothing here re-checks user input.
#pragma once

#include <cstdint>

#include "fastattn/core/context.h"
#include "fastattn/kernels/attention/fmha.h"

namespace fastattn::kernels::cpu {

// Shapes derived by the validation in fmha.cc.
struct FmhaShape {
  int64_t batch = 0;
  int64_t total_q = 0;
  int num_heads_q = 0;
  int num_heads_k = 0;
  int head_dim = 0;
  bool paged = false;
  int64_t block_size = 0;  // paged KV only
};

void fmha_forward_cpu(const Context& ctx, const FmhaParams& p, const FmhaShape& shape);

}  // namespace fastattn::kernels::cpu

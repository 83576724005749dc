// Shapes of one attention call, derived by the validation in fmha.cc and handed to the CPU and
// CUDA implementations (which do not re-check user input).
#pragma once

#include <cstdint>

namespace fastattn::kernels {

struct FmhaShape {
  int64_t batch = 0;
  int64_t total_q = 0;
  int num_heads_q = 0;
  int num_heads_k = 0;
  int head_dim = 0;
  bool paged = false;
  int64_t block_size = 0;  // paged KV only
};

}  // namespace fastattn::kernels

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
  // GPU only: FmhaParams::max_seqlen_q, or the value read back from cu_seqlens_q when the kernel
  // choice needed it (0 = unknown: the CUDA kernels read it back themselves). check_structure
  // leaves it 0.
  int max_seqlen_q = 0;
};

}  // namespace fastattn::kernels

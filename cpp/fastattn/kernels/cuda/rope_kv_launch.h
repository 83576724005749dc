// Launch description shared by the host code (rope_kv_cuda.cc, plain C++) and the kernel
// (rope_kv_kernel.cu) of apply_rope, kv_cache_write and the fused rope_kv_cache_write on CUDA.
// Passed by value as the kernel parameter (about 1.4 KB, under the 4 KB limit of CUDA 11.8).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "fastattn/core/dtype.h"

namespace fastattn::kernels::cuda {

// Rotary pairs the GPU kernel takes (rotary_dim up to 512): the inverse frequencies travel
// inside the launch parameters, so no device table has to be uploaded or cached.
constexpr int kRopeMaxPairs = 256;

// A [tokens, heads, dim] view with a contiguous last dimension, any float dtype.
struct TokenRows {
  void* data = nullptr;
  DType dtype = DType::kFloat32;
  int64_t token_stride = 0, head_stride = 0;  // in elements
  int heads = 0, dim = 0;
};

// A paged cache [num_blocks, block_size, heads, dim] with a contiguous last dimension.
struct CacheRows {
  void* data = nullptr;
  DType dtype = DType::kFloat32;
  int64_t block_stride = 0, slot_stride = 0, head_stride = 0;  // in elements
};

// One launch does, per token: rotate rotated[0..num_rotated) in place, then (write_cache) write
// K (rotated[1] after rotation when k_from_rotated, else k_src) and v_src to the caches at the
// token's slot; slots outside [0, num_slots) are skipped.
struct RopeKvLaunch {
  int64_t tokens = 0;
  int rows_per_block = 1;  // (token, head) rows one thread block handles

  int num_rotated = 0;
  TokenRows rotated[2];
  const void* positions = nullptr;
  bool positions_int64 = false;
  bool neox = true;
  int pairs = 0;  // rotary_dim / 2

  bool write_cache = false;
  bool k_from_rotated = false;
  TokenRows k_src, v_src;
  CacheRows k_cache, v_cache;
  int64_t block_size = 1, num_slots = 0;
  const int32_t* slots = nullptr;

  float inv_freq[kRopeMaxPairs] = {};
};

// Threads per block of the kernel.
constexpr int kRopeKvThreads = 128;

// Enqueues the kernel on `stream`; throws fastattn::Error on a launch failure.
void launch_rope_kv(const RopeKvLaunch& p, cudaStream_t stream);

}  // namespace fastattn::kernels::cuda

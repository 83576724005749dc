// KvCache: per-layer K and V pools of shape [num_blocks, block_size, Hk, D], allocated through an
// Allocator, addressed through a SpillBlockManager's slots.
#pragma once

#include <cstdint>
#include <vector>

#include "fastattn/core/allocator.h"
#include "fastattn/core/dtype.h"

namespace fastattn::kvcache {

struct KvCacheConfig {
  int num_layers = 0;
  int64_t num_blocks = 0;
  int block_size = 16;
  int num_kv_heads = 0;  // per rank
  int head_dim = 0;
  DType dtype = DType::kFloat32;  // float32, float16 or bfloat16
};

class KvCache {
 public:
  // Throws InvalidArgument for bad sizes, OutOfMemory if the allocator cannot hold the pools.
  KvCache(const KvCacheConfig& config, Allocator* allocator);

  const KvCacheConfig& config() const { return config_; }
  Tensor& k(int layer) { return k_[static_cast<size_t>(layer)].view(); }
  Tensor& v(int layer) { return v_[static_cast<size_t>(layer)].view(); }
  // Bytes of K and V over all layers.
  size_t nbytes() const { return nbytes_; }
  // Bytes per token slot (K and V, all layers).
  static size_t bytes_per_token(const KvCacheConfig& c);

 private:
  KvCacheConfig config_;
  std::vector<OwnedTensor> k_;
  std::vector<OwnedTensor> v_;
  size_t nbytes_ = 0;
};

}  // namespace fastattn::kvcache

#include "fastattn/kvcache/kv_cache.h"

#include "fastattn/core/error.h"

namespace fastattn::kvcache {

size_t KvCache::bytes_per_token(const KvCacheConfig& c) {
  return 2 * static_cast<size_t>(c.num_layers) * static_cast<size_t>(c.num_kv_heads) *
         static_cast<size_t>(c.head_dim) * dtype_size(c.dtype);
}

KvCache::KvCache(const KvCacheConfig& config, Allocator* allocator) : config_(config) {
  FA_CHECK(is_floating(config.dtype), "kv_dtype: must be float32, float16 or bfloat16, got ",
           dtype_name(config.dtype));
  FA_CHECK(config.num_layers > 0 && config.num_blocks > 0 && config.block_size > 0 &&
               config.num_kv_heads > 0 && config.head_dim > 0,
           "KV cache: every size must be positive (layers ", config.num_layers, ", blocks ",
           config.num_blocks, ", block_size ", config.block_size, ", kv heads ",
           config.num_kv_heads, ", head_dim ", config.head_dim, ")");
  const std::vector<int64_t> shape = {config.num_blocks, config.block_size, config.num_kv_heads,
                                      config.head_dim};
  k_.reserve(static_cast<size_t>(config.num_layers));
  v_.reserve(static_cast<size_t>(config.num_layers));
  for (int l = 0; l < config.num_layers; ++l) {
    k_.emplace_back(allocator, config.dtype, shape);
    v_.emplace_back(allocator, config.dtype, shape);
    nbytes_ += k_.back().view().nbytes() + v_.back().view().nbytes();
  }
}

}  // namespace fastattn::kvcache

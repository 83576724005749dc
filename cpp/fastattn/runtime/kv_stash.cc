#include "fastattn/runtime/kv_stash.h"

#include "fastattn/core/copy.h"
#include "fastattn/core/error.h"

namespace fastattn::runtime {
namespace {

size_t block_bytes_of(const kvcache::KvCacheConfig& c) {
  return static_cast<size_t>(c.block_size) * static_cast<size_t>(c.num_kv_heads) *
         static_cast<size_t>(c.head_dim) * dtype_size(c.dtype);
}

char* block_at(Tensor& pool, int32_t block, size_t block_bytes) {
  return static_cast<char*>(pool.data()) + static_cast<size_t>(block) * block_bytes;
}

}  // namespace

size_t KvStash::bytes_for(const kvcache::KvCacheConfig& c, const kvcache::SpillBlockManager& blocks,
                          int64_t tokens) {
  return block_bytes_of(c) * 2 * static_cast<size_t>(c.num_layers) *
         static_cast<size_t>(blocks.blocks_for(tokens));
}

KvStash KvStash::save(const Context& ctx, const kvcache::SpillBlockManager& blocks,
                      kvcache::SpillBlockManager::SeqId seq, int64_t tokens,
                      kvcache::KvCache& device, kvcache::KvCache* host) {
  const kvcache::KvCacheConfig& c = device.config();
  KvStash s;
  s.tokens_ = tokens;
  s.num_blocks_ = blocks.blocks_for(tokens);
  s.block_bytes_ = block_bytes_of(c);
  FA_CHECK(s.num_blocks_ * blocks.block_size() <= blocks.capacity(seq), "KvStash::save: sequence ",
           seq, " holds ", blocks.capacity(seq), " token slots, fewer than the ", tokens,
           " tokens to save");
  const std::vector<int32_t>& host_table = blocks.host_table(seq);
  const std::vector<int32_t>& device_table = blocks.device_table(seq);
  FA_CHECK(host_table.empty() || host != nullptr, "KvStash::save: sequence ", seq,
           " has host blocks but no host pool was given");
  if (s.num_blocks_ == 0) return s;
  const int64_t elems = static_cast<int64_t>(s.block_bytes_ / dtype_size(c.dtype));
  s.data_ =
      OwnedTensor(ctx.device.type == DeviceType::kCUDA ? pinned_host_allocator() : host_allocator(),
                  c.dtype, {c.num_layers, 2, s.num_blocks_, elems});
  char* out = static_cast<char*>(s.data_.view().data());
  const Device out_dev = s.data_.view().device();
  for (int l = 0; l < c.num_layers; ++l) {
    for (int kv = 0; kv < 2; ++kv) {
      for (int64_t b = 0; b < s.num_blocks_; ++b) {
        const bool in_host = b < static_cast<int64_t>(host_table.size());
        kvcache::KvCache& cache = in_host ? *host : device;
        Tensor& pool = kv == 0 ? cache.k(l) : cache.v(l);
        const int32_t id = in_host ? host_table[static_cast<size_t>(b)]
                                   : device_table[static_cast<size_t>(b) - host_table.size()];
        detail::copy_bytes(ctx, out, out_dev, block_at(pool, id, s.block_bytes_), pool.device(),
                           s.block_bytes_);
        out += s.block_bytes_;
      }
    }
  }
  return s;
}

void KvStash::restore(const Context& ctx, const kvcache::SpillBlockManager& blocks,
                      kvcache::SpillBlockManager::SeqId seq, kvcache::KvCache& device) const {
  const kvcache::KvCacheConfig& c = device.config();
  const std::vector<int32_t>& table = blocks.device_table(seq);
  FA_CHECK(blocks.host_table(seq).empty() && static_cast<int64_t>(table.size()) >= num_blocks_,
           "KvStash::restore: sequence ", seq, " must hold at least ", num_blocks_,
           " device blocks and no host blocks (has ", table.size(), " device, ",
           blocks.host_table(seq).size(), " host)");
  FA_CHECK(block_bytes_of(c) == block_bytes_, "KvStash::restore: the KV cache's block layout ",
           "differs from the one saved");
  if (num_blocks_ == 0) return;
  const char* in = static_cast<const char*>(data_.view().data());
  const Device in_dev = data_.view().device();
  for (int l = 0; l < c.num_layers; ++l) {
    for (int kv = 0; kv < 2; ++kv) {
      Tensor& pool = kv == 0 ? device.k(l) : device.v(l);
      for (int64_t b = 0; b < num_blocks_; ++b) {
        detail::copy_bytes(ctx, block_at(pool, table[static_cast<size_t>(b)], block_bytes_),
                           pool.device(), in, in_dev, block_bytes_);
        in += block_bytes_;
      }
    }
  }
}

}  // namespace fastattn::runtime

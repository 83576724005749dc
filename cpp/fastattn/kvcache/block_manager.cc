#include "fastattn/kvcache/block_manager.h"

#include <limits>

#include "fastattn/core/error.h"

namespace fastattn::kvcache {

BlockManager::BlockManager(int64_t num_blocks, int block_size)
    : num_blocks_(num_blocks), block_size_(block_size) {
  FA_CHECK(block_size > 0, "kv_block_size: must be positive, got ", block_size);
  FA_CHECK(num_blocks > 0, "KV cache: the pool needs at least one block, got ", num_blocks);
  FA_CHECK(num_blocks <= std::numeric_limits<int32_t>::max() / block_size,
           "KV cache: ", num_blocks, " blocks of ", block_size,
           " tokens exceed the int32 slot range");
  free_.reserve(static_cast<size_t>(num_blocks));
  // Pushed in reverse so that a fresh pool hands out blocks 0, 1, 2, ...
  for (int64_t b = num_blocks - 1; b >= 0; --b) free_.push_back(static_cast<int32_t>(b));
}

BlockManager::SeqId BlockManager::add_sequence() {
  const SeqId id = next_id_++;
  seqs_.emplace(id, std::vector<int32_t>());
  return id;
}

const std::vector<int32_t>& BlockManager::table_of(SeqId seq, const char* what) const {
  auto it = seqs_.find(seq);
  FA_CHECK(it != seqs_.end(), "KV cache ", what, ": unknown sequence id ", seq);
  return it->second;
}

void BlockManager::reserve(SeqId seq, int64_t total_tokens) {
  table_of(seq, "reserve");
  FA_CHECK(total_tokens >= 0, "KV cache reserve: negative token count ", total_tokens);
  std::vector<int32_t>& table = seqs_[seq];
  const int64_t have = static_cast<int64_t>(table.size());
  const int64_t need = blocks_for(total_tokens) - have;
  if (need <= 0) return;
  if (need > num_free_blocks()) {
    FA_THROW_AS(OutOfMemory, "KV cache exhausted: a sequence needs ",
                total_tokens - have * block_size_, " more tokens of cache (", need,
                " blocks of ", block_size_, ") but only ", num_free_blocks() * block_size_,
                " tokens (", num_free_blocks(), " blocks) are free of ", num_blocks_ * block_size_,
                "; raise max_cache_tokens or lower the batch / max_new_tokens");
  }
  for (int64_t i = 0; i < need; ++i) {
    table.push_back(free_.back());
    free_.pop_back();
  }
}

void BlockManager::free_sequence(SeqId seq) {
  table_of(seq, "free");
  auto it = seqs_.find(seq);
  // Returned in reverse so the next sequence reuses them in the same order.
  for (auto b = it->second.rbegin(); b != it->second.rend(); ++b) free_.push_back(*b);
  seqs_.erase(it);
}

void BlockManager::reset() {
  while (!seqs_.empty()) free_sequence(seqs_.begin()->first);
}

const std::vector<int32_t>& BlockManager::block_table(SeqId seq) const {
  return table_of(seq, "block_table");
}

int64_t BlockManager::capacity(SeqId seq) const {
  return static_cast<int64_t>(table_of(seq, "capacity").size()) * block_size_;
}

int32_t BlockManager::slot(SeqId seq, int64_t position) const {
  const std::vector<int32_t>& table = table_of(seq, "slot");
  FA_CHECK(position >= 0 && position < static_cast<int64_t>(table.size()) * block_size_,
           "KV cache slot: position ", position, " is outside the ",
           table.size() * static_cast<size_t>(block_size_), " reserved slots of sequence ", seq);
  return table[static_cast<size_t>(position / block_size_)] * block_size_ +
         static_cast<int32_t>(position % block_size_);
}

}  // namespace fastattn::kvcache

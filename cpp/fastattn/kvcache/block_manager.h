// BlockManager: bookkeeping for a paged KV cache. The pool is num_blocks fixed-size blocks of
// block_size token slots; each sequence owns a block table (its blocks in order), so token p of a
// sequence lives in slot block_table[p / block_size] * block_size + p % block_size.
// Pure host bookkeeping: the K/V memory itself is in KvCache.
#pragma once

#include <cstdint>
#include <unordered_map>
#include <vector>

namespace fastattn::kvcache {

class BlockManager {
 public:
  using SeqId = int64_t;

  BlockManager(int64_t num_blocks, int block_size);

  int block_size() const { return block_size_; }
  int64_t num_blocks() const { return num_blocks_; }
  int64_t num_free_blocks() const { return static_cast<int64_t>(free_.size()); }
  int64_t num_sequences() const { return static_cast<int64_t>(seqs_.size()); }
  // Blocks needed to hold `tokens` token slots.
  int64_t blocks_for(int64_t tokens) const { return (tokens + block_size_ - 1) / block_size_; }

  // Starts a sequence with no blocks; ids are never reused.
  SeqId add_sequence();
  // Grows the sequence's table so it holds at least `total_tokens` slots. All or nothing: when
  // the pool is short it throws OutOfMemory naming the tokens needed and available, and nothing
  // changes.
  void reserve(SeqId seq, int64_t total_tokens);
  // Returns the sequence's blocks to the free list and forgets it.
  void free_sequence(SeqId seq);
  // Frees every sequence.
  void reset();

  const std::vector<int32_t>& block_table(SeqId seq) const;
  // Token slots the sequence holds (its blocks * block_size).
  int64_t capacity(SeqId seq) const;
  // Slot of token `position` of the sequence; the position must be within its capacity.
  int32_t slot(SeqId seq, int64_t position) const;

 private:
  const std::vector<int32_t>& table_of(SeqId seq, const char* what) const;

  int64_t num_blocks_;
  int block_size_;
  std::vector<int32_t> free_;  // a stack: the most recently freed block is reused first
  std::unordered_map<SeqId, std::vector<int32_t>> seqs_;
  SeqId next_id_ = 0;
};

}  // namespace fastattn::kvcache

// BatchBuilder: assembles the host-side metadata of one forward pass (token ids, positions, KV
// slots, cu_seqlens, block table, key lengths) in int32 buffers that are reused between steps,
// so building a decode step allocates nothing once the buffers have reached their size.
#pragma once

#include <cstdint>
#include <vector>

#include "fastattn/kvcache/block_manager.h"
#include "fastattn/layers/forward_batch.h"

namespace fastattn::runtime {

class BatchBuilder {
 public:
  // Pre-sizes the buffers (optional: they grow on demand otherwise).
  void reserve(int64_t max_tokens, int max_seqs, int64_t max_blocks_per_seq);
  void clear();

  // Appends a sequence's n tokens ids[0..n) at positions start .. start + n - 1. Its KV blocks
  // must already be reserved for start + n tokens.
  void add(const kvcache::BlockManager& blocks, kvcache::BlockManager::SeqId seq,
           const int64_t* ids, int64_t n, int64_t start);

  int num_seqs() const { return static_cast<int>(seqlens_k_.size()); }
  int64_t num_tokens() const { return static_cast<int64_t>(ids_.size()); }
  // Row of sequence b's last token in this batch.
  int64_t last_row(int b) const { return cu_q_[static_cast<size_t>(b) + 1] - 1; }

  // Views over the buffers; valid until the next add() or clear().
  layers::ForwardBatch build();

 private:
  std::vector<int32_t> ids_, positions_, slots_, cu_q_{0}, seqlens_k_, block_table_;
  std::vector<const std::vector<int32_t>*> tables_;
};

}  // namespace fastattn::runtime

// BatchBuilder: assembles the host-side metadata of one forward pass (token ids, positions, KV
// slots, cu_seqlens, block tables, key lengths) in int32 buffers that are reused between steps,
// so building a decode step allocates nothing once the buffers have reached their size.
// With a two-tier KV cache, each sequence's keys are split into a host part (older tokens, host
// pool) and a device part (the rest, including this pass's tokens), described separately.
#pragma once

#include <cstdint>
#include <vector>

#include "fastattn/kvcache/spill_manager.h"
#include "fastattn/layers/forward_batch.h"

namespace fastattn::runtime {

class BatchBuilder {
 public:
  // Pre-sizes the buffers (optional: they grow on demand otherwise).
  void reserve(int64_t max_tokens, int max_seqs, int64_t max_blocks_per_seq);
  void clear();
  // Appends a sequence's n tokens ids[0..n) at positions start .. start + n - 1. Its KV slots
  // must already be reserved on the device for them. Tables are read at build().
  void add(const kvcache::SpillBlockManager& blocks, kvcache::SpillBlockManager::SeqId seq,
           const int64_t* ids, int64_t n, int64_t start);
  int num_seqs() const { return static_cast<int>(seqs_.size()); }
  int64_t num_tokens() const { return static_cast<int64_t>(ids_.size()); }
  // Row of sequence b's last token in this batch.
  int64_t last_row(int b) const { return cu_q_[static_cast<size_t>(b) + 1] - 1; }
  // Views over the buffers; valid until the next add() or clear().
  layers::ForwardBatch build();

 private:
  static void fill_table(const std::vector<const std::vector<int32_t>*>& tables,
                         std::vector<int32_t>& out, size_t* width);

  const kvcache::SpillBlockManager* blocks_ = nullptr;
  std::vector<kvcache::SpillBlockManager::SeqId> seqs_;
  std::vector<int64_t> ends_;  // start + n of each sequence
  std::vector<int32_t> ids_, positions_, slots_, cu_q_{0}, seqlens_k_, block_table_;
  std::vector<int32_t> host_seqlens_k_, host_block_table_, host_cu_k_, cu_k_;
  std::vector<const std::vector<int32_t>*> tables_, host_tables_;
};

}  // namespace fastattn::runtime

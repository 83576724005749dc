// KvStash: the KV-cache contents of a preempted sequence, held in host memory outside the KV
// pools (pinned memory on a GPU), so that its pool blocks can serve other sequences and the
// sequence can later resume exactly where it stopped, without recomputing its prompt.
//
// save() copies the first ceil(tokens / block_size) blocks of the sequence, in token order,
// whichever pool each lies in (the host pool's older blocks first, then the device pool's: see
// kvcache/spill_manager.h), every layer's K and V; restore() copies them into the blocks a
// fresh sequence of the same length was given (all in the device pool right after its reserve).
// Both queue their copies on the context's stream: a later write into the freed blocks, or a
// forward pass reading the restored ones, is ordered after them.
#pragma once

#include <cstdint>

#include "fastattn/core/allocator.h"
#include "fastattn/core/context.h"
#include "fastattn/kvcache/kv_cache.h"
#include "fastattn/kvcache/spill_manager.h"

namespace fastattn::runtime {

class KvStash {
 public:
  KvStash() = default;
  // Copies tokens [0, tokens) of `seq` (whole blocks) out of the pools. `host` is the host
  // pool's cache (null when the session has none).
  static KvStash save(const Context& ctx, const kvcache::SpillBlockManager& blocks,
                      kvcache::SpillBlockManager::SeqId seq, int64_t tokens,
                      kvcache::KvCache& device, kvcache::KvCache* host);
  // Copies the stash into `seq`'s blocks, which must all be in the device pool and hold at
  // least tokens() tokens (InvalidArgument otherwise: the pools would be corrupted).
  void restore(const Context& ctx, const kvcache::SpillBlockManager& blocks,
               kvcache::SpillBlockManager::SeqId seq, kvcache::KvCache& device) const;
  // Host bytes a stash of `tokens` tokens of a sequence would hold.
  static size_t bytes_for(const kvcache::KvCacheConfig& c, const kvcache::SpillBlockManager& blocks,
                          int64_t tokens);
  int64_t tokens() const { return tokens_; }
  int64_t num_blocks() const { return num_blocks_; }
  size_t nbytes() const { return data_.defined() ? data_.view().nbytes() : 0; }

 private:
  int64_t tokens_ = 0;
  int64_t num_blocks_ = 0;
  size_t block_bytes_ = 0;  // one layer's K (or V) of one block
  OwnedTensor data_;        // the cache dtype: [layer][K, V][block][one block's elements]
};

}  // namespace fastattn::runtime

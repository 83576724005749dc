// SpillBlockManager: bookkeeping of a two-tier paged KV cache. A device pool (GPU memory; on the
// CPU backend, host memory standing in for it) holds the most recent tokens of every sequence and
// a host pool (pinned memory) holds the older ones that did not fit: sequence s is
//
//   [ host blocks: tokens 0 .. host_tokens(s) ) [ device blocks: tokens host_tokens(s) .. ) ]
//
// The host part is always whole blocks. New tokens are always written to the device part.
//
// Block states and transitions:
//   free       in its pool's free list                      -> device / host (reserve)
//   device     a device block holding a sequence's tokens   -> in flight (spill), free (release)
//   in flight  a device block whose tokens are being copied to a host block: its tokens are
//              already addressed through the host table, and the device block is reused only
//              after the caller's copy function returned (it orders the copy before any later
//              write into the block)                         -> free
//   host       a host block holding a sequence's tokens     -> free (release)
//
// Placement policy (measured choice: recency): when the device pool is short, the oldest device
// blocks are spilled, first of the sequence that needs room, then of the sequence holding the
// most device blocks; blocks holding tokens at or after a sequence's `keep_from` position (the
// tokens of the forward pass being prepared) never move. With a host pool of 0 blocks this is a
// plain paged KV cache.
#pragma once

#include <cstdint>
#include <functional>
#include <unordered_map>
#include <vector>

namespace fastattn::kvcache {

struct SpillMove {
  int32_t device_block;  // source (device pool)
  int32_t host_block;    // destination (host pool)
};

class SpillBlockManager {
 public:
  using SeqId = int64_t;
  // Copies the contents (every layer, K and V) of each move's device block to its host block,
  // ordered before any later write into those device blocks.
  using CopyFn = std::function<void(const std::vector<SpillMove>&)>;

  SpillBlockManager(int64_t device_blocks, int64_t host_blocks, int block_size);

  int block_size() const { return block_size_; }
  int64_t device_blocks() const { return device_total_; }
  int64_t host_blocks() const { return host_total_; }
  int64_t free_device_blocks() const { return static_cast<int64_t>(device_free_.size()); }
  int64_t free_host_blocks() const { return static_cast<int64_t>(host_free_.size()); }
  int64_t blocks_for(int64_t tokens) const { return (tokens + block_size_ - 1) / block_size_; }
  // Token slots both pools hold together (the longest total context they can serve).
  int64_t capacity_tokens() const { return (device_total_ + host_total_) * block_size_; }

  SeqId add_sequence();
  // Grows the sequence to hold `total_tokens` slots, keeping tokens [keep_from, total_tokens) on
  // the device; spills as the policy above says, calling `copy` once with all the moves before
  // reusing any spilled device block. All or nothing: when the pools cannot hold it, throws
  // OutOfMemory naming what is needed and what both pools have, and changes nothing.
  void reserve(SeqId seq, int64_t total_tokens, int64_t keep_from, const CopyFn& copy);
  void free_sequence(SeqId seq);
  void reset();

  int64_t capacity(SeqId seq) const;     // slots held (host + device)
  int64_t host_tokens(SeqId seq) const;  // tokens in the host part
  const std::vector<int32_t>& device_table(SeqId seq) const;
  const std::vector<int32_t>& host_table(SeqId seq) const;
  // Device-pool slot of token `position`, which must lie in the device part.
  int32_t slot(SeqId seq, int64_t position) const;
  int64_t spilled_blocks_total() const { return spilled_total_; }

 private:
  struct Seq {
    std::vector<int32_t> host;
    std::vector<int32_t> device;
    int64_t keep_from = 0;  // the last reserve's: tokens from here on stay on the device
  };
  const Seq& seq_of(SeqId seq, const char* what) const;
  // Spillable device blocks of s: those holding only tokens before s.keep_from.
  int64_t spillable(const Seq& s) const;

  int block_size_;
  int64_t device_total_;
  int64_t host_total_;
  std::vector<int32_t> device_free_;  // stacks: the lowest ids are handed out first
  std::vector<int32_t> host_free_;
  std::unordered_map<SeqId, Seq> seqs_;
  SeqId next_id_ = 0;
  int64_t spilled_total_ = 0;
};

}  // namespace fastattn::kvcache

#include "fastattn/kvcache/spill_manager.h"

#include <algorithm>
#include <limits>

#include "fastattn/core/error.h"

namespace fastattn::kvcache {
namespace {

std::vector<int32_t> fresh_pool(int64_t n) {
  std::vector<int32_t> v;
  v.reserve(static_cast<size_t>(n));
  for (int64_t b = n - 1; b >= 0; --b) v.push_back(static_cast<int32_t>(b));
  return v;
}

}  // namespace

SpillBlockManager::SpillBlockManager(int64_t device_blocks, int64_t host_blocks, int block_size)
    : block_size_(block_size), device_total_(device_blocks), host_total_(host_blocks) {
  FA_CHECK(block_size > 0, "kv_block_size: must be positive, got ", block_size);
  FA_CHECK(device_blocks > 0, "KV cache: the device pool needs at least one block, got ",
           device_blocks);
  FA_CHECK(host_blocks >= 0, "KV cache: negative host pool size ", host_blocks);
  const int64_t limit = std::numeric_limits<int32_t>::max() / block_size;
  FA_CHECK(device_blocks <= limit && host_blocks <= limit, "KV cache: pools of ", device_blocks,
           " / ", host_blocks, " blocks of ", block_size, " tokens exceed the int32 slot range");
  device_free_ = fresh_pool(device_blocks);
  host_free_ = fresh_pool(host_blocks);
}

SpillBlockManager::SeqId SpillBlockManager::add_sequence() {
  const SeqId id = next_id_++;
  seqs_.emplace(id, Seq());
  return id;
}

const SpillBlockManager::Seq& SpillBlockManager::seq_of(SeqId seq, const char* what) const {
  auto it = seqs_.find(seq);
  FA_CHECK(it != seqs_.end(), "KV cache ", what, ": unknown sequence id ", seq);
  return it->second;
}

int64_t SpillBlockManager::spillable(const Seq& s) const {
  const int64_t host_tok = static_cast<int64_t>(s.host.size()) * block_size_;
  const int64_t before = std::max<int64_t>(s.keep_from - host_tok, 0) / block_size_;
  return std::min<int64_t>(before, static_cast<int64_t>(s.device.size()));
}

void SpillBlockManager::reserve(SeqId id, int64_t total_tokens, int64_t keep_from,
                                const CopyFn& copy) {
  seq_of(id, "reserve");
  FA_CHECK(total_tokens >= 0 && keep_from >= 0 && keep_from <= total_tokens,
           "KV cache reserve: bad token range ", keep_from, " .. ", total_tokens);
  Seq& s = seqs_[id];
  const int64_t need =
      blocks_for(total_tokens) - static_cast<int64_t>(s.host.size() + s.device.size());
  const int64_t old_keep = s.keep_from;
  s.keep_from = std::max(s.keep_from, keep_from);
  if (need <= 0) return;

  // Plan the spills (device blocks to free up) before touching anything: all or nothing.
  const int64_t short_by = need - free_device_blocks();
  std::vector<std::pair<SeqId, int64_t>> plan;  // (sequence, blocks to spill from its front)
  int64_t planned = 0;
  if (short_by > 0) {
    const int64_t own = std::min(spillable(s), short_by);
    if (own > 0) plan.emplace_back(id, own);
    planned = own;
    // Then the others, most device blocks first.
    std::vector<std::pair<int64_t, SeqId>> others;
    for (const auto& [oid, o] : seqs_) {
      if (oid != id && spillable(o) > 0) others.emplace_back(spillable(o), oid);
    }
    std::sort(others.begin(), others.end(), [](const auto& a, const auto& b) {
      return a.first != b.first ? a.first > b.first : a.second < b.second;
    });
    for (const auto& [n, oid] : others) {
      if (planned >= short_by) break;
      const int64_t take = std::min(n, short_by - planned);
      plan.emplace_back(oid, take);
      planned += take;
    }
    if (planned < short_by || planned > free_host_blocks()) {
      s.keep_from = old_keep;
      const int64_t bs = block_size_;
      FA_THROW_AS(OutOfMemory, "KV cache exhausted: a sequence needs ", need * bs,
                  " more tokens of cache; the device pool has ", free_device_blocks() * bs,
                  " free of ", device_total_ * bs, " tokens and ", planned * bs,
                  " could move to the host pool, which has ", free_host_blocks() * bs, " free of ",
                  host_total_ * bs,
                  " tokens; raise the KV budgets (max_cache_tokens / host_kv_tokens) or lower "
                  "the batch, prompt or max_new_tokens");
    }
  }

  // Spill: the oldest device blocks become host blocks (in flight until copy() returns).
  std::vector<SpillMove> moves;
  for (const auto& [sid, n] : plan) {
    Seq& victim = seqs_[sid];
    for (int64_t i = 0; i < n; ++i) {
      moves.push_back({victim.device[static_cast<size_t>(i)], host_free_.back()});
      victim.host.push_back(host_free_.back());
      host_free_.pop_back();
    }
    victim.device.erase(victim.device.begin(), victim.device.begin() + n);
  }
  if (!moves.empty()) {
    copy(moves);
    for (auto m = moves.rbegin(); m != moves.rend(); ++m) device_free_.push_back(m->device_block);
    spilled_total_ += static_cast<int64_t>(moves.size());
  }
  for (int64_t i = 0; i < need; ++i) {
    s.device.push_back(device_free_.back());
    device_free_.pop_back();
  }
}

void SpillBlockManager::free_sequence(SeqId id) {
  seq_of(id, "free");
  auto it = seqs_.find(id);
  for (auto b = it->second.device.rbegin(); b != it->second.device.rend(); ++b)
    device_free_.push_back(*b);
  for (auto b = it->second.host.rbegin(); b != it->second.host.rend(); ++b)
    host_free_.push_back(*b);
  seqs_.erase(it);
}

void SpillBlockManager::reset() {
  while (!seqs_.empty()) free_sequence(seqs_.begin()->first);
}

int64_t SpillBlockManager::capacity(SeqId id) const {
  const Seq& s = seq_of(id, "capacity");
  return static_cast<int64_t>(s.host.size() + s.device.size()) * block_size_;
}

int64_t SpillBlockManager::host_tokens(SeqId id) const {
  return static_cast<int64_t>(seq_of(id, "host_tokens").host.size()) * block_size_;
}

const std::vector<int32_t>& SpillBlockManager::device_table(SeqId id) const {
  return seq_of(id, "device_table").device;
}

const std::vector<int32_t>& SpillBlockManager::host_table(SeqId id) const {
  return seq_of(id, "host_table").host;
}

int32_t SpillBlockManager::slot(SeqId id, int64_t position) const {
  const Seq& s = seq_of(id, "slot");
  const int64_t rel = position - static_cast<int64_t>(s.host.size()) * block_size_;
  FA_CHECK(rel >= 0 && rel < static_cast<int64_t>(s.device.size()) * block_size_,
           "KV cache slot: position ", position, " is not in the device part of sequence ", id,
           " (host tokens ", s.host.size() * static_cast<size_t>(block_size_), ", device slots ",
           s.device.size() * static_cast<size_t>(block_size_), ")");
  return s.device[static_cast<size_t>(rel / block_size_)] * block_size_ +
         static_cast<int32_t>(rel % block_size_);
}

}  // namespace fastattn::kvcache

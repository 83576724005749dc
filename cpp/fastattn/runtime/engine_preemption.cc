// Engine under KV pressure with preemption on (runtime/engine.h, "KV pressure"): optimistic
// admission, preemption of the youngest running requests to host memory, resumption.
#include <algorithm>

#include "fastattn/core/copy.h"
#include "fastattn/core/error.h"
#include "fastattn/runtime/engine.h"

namespace fastattn::runtime {

int64_t Engine::free_blocks() const {
  return session_.blocks_->free_device_blocks() + session_.blocks_->free_host_blocks();
}

int64_t Engine::held_blocks(const Request& r) const {
  return r.seq < 0 ? 0 : session_.blocks_->capacity(r.seq) / session_.blocks_->block_size();
}

int64_t Engine::next_context(const Request& r) {
  const auto len = static_cast<int64_t>(prefill_tokens(r).size());
  // The last new token is never written to the cache: a context never exceeds this.
  return std::min(std::max(len, r.cached) + 1,
                  static_cast<int64_t>(r.prompt.size()) + r.params.max_new_tokens - 1);
}

int64_t Engine::owed_blocks() const {
  const kvcache::SpillBlockManager& b = *session_.blocks_;
  int64_t owed = 0;
  for (const Request& r : running_) {
    owed += std::max<int64_t>(b.blocks_for(next_context(r)) - held_blocks(r), 0);
  }
  return owed;
}

int64_t Engine::fitting_tokens(const Request& r) const {
  const int64_t slots = (held_blocks(r) + free_blocks()) * session_.blocks_->block_size();
  return std::max<int64_t>(slots - r.cached, 0);
}

int64_t Engine::stashed_bytes() const {
  int64_t bytes = 0;
  for (const Request& p : preempted_) bytes += static_cast<int64_t>(p.stash.nbytes());
  for (const Request& p : running_)
    bytes += p.preempt_now ? static_cast<int64_t>(p.stash.nbytes()) : 0;
  return bytes;
}

void Engine::preempt(Request& r) {
  InferenceSession& s = session_;
  const int64_t stashed = stashed_bytes();
  const auto bytes =
      static_cast<int64_t>(KvStash::bytes_for(s.cache_->config(), *s.blocks_, r.cached));
  if (stashed + bytes <= stash_cap_bytes_) {
    // The copies are queued before any later write into the blocks freed here (same stream).
    r.stash = KvStash::save(s.ctx_, *s.blocks_, r.seq, r.cached, *s.cache_, s.host_cache_.get());
  } else {  // over the host cap: drop the KV, prefill the prompt and the generated tokens again
    r.replay.clear();
    if (r.out.size() > 1) {
      r.replay.reserve(r.prompt.size() + r.out.size() - 1);
      r.replay.insert(r.replay.end(), r.prompt.begin(), r.prompt.end());
      r.replay.insert(r.replay.end(), r.out.begin(), r.out.end() - 1);
    }
    r.cached = 0;
    ++recomputed_;
  }
  s.blocks_->free_sequence(r.seq);
  r.seq = -1;
  r.preempt_now = true;
  std::lock_guard<std::mutex> lock(queue_mu_);
  ++stats_.preemptions;
}

bool Engine::make_room(size_t i, int64_t tokens) {
  const kvcache::SpillBlockManager& b = *session_.blocks_;
  Request& r = running_[i];
  const int64_t need = b.blocks_for(r.cached + tokens) - held_blocks(r);
  while (need > free_blocks()) {
    size_t victim = running_.size();
    while (victim > i && running_[victim - 1].preempt_now) --victim;
    FA_ASSERT(victim > i, "make_room: no running request left to preempt");
    preempt(running_[--victim]);  // the youngest not yet planned (requests before i are)
    if (victim == i) return false;
  }
  return true;
}

bool Engine::resume(Request& r) {
  InferenceSession& s = session_;
  r.seq = s.blocks_->add_sequence();
  if (r.stash.tokens() == 0) {  // nothing stashed (recompute, or no token was cached): prefill
    std::lock_guard<std::mutex> lock(queue_mu_);
    ++stats_.resumed;
    return true;
  }
  try {
    // keep_from 0: every restored block is in the device pool (others may spill to make room).
    s.reserve_kv(r.seq, 0, r.stash.tokens());
  } catch (const OutOfMemory&) {  // the device pool cannot take it back yet (nothing changed)
    s.blocks_->free_sequence(r.seq);
    r.seq = -1;
    return false;
  }
  r.stash.restore(s.ctx_, *s.blocks_, r.seq, *s.cache_);
  synchronize(s.ctx_);  // the stash's (pinned) memory must not be freed under a queued copy
  r.stash = KvStash();
  std::lock_guard<std::mutex> lock(queue_mu_);
  ++stats_.resumed;
  return true;
}

void Engine::admit_or_resume() {
  const kvcache::SpillBlockManager& b = *session_.blocks_;
  const auto room = [&] { return static_cast<int>(running_.size()) < options_.max_running; };
  int64_t owed = owed_blocks();
  // The preempted first (they are older than anything waiting), oldest first, no overtaking.
  while (!preempted_.empty() && room()) {
    Request& p = preempted_.front();
    const int64_t need = b.blocks_for(next_context(p));
    if (need + owed > free_blocks() || !resume(p)) break;
    owed += std::max<int64_t>(need - held_blocks(p), 0);
    const auto at = std::upper_bound(running_.begin(), running_.end(), p.id,
                                     [](int64_t id, const Request& q) { return id < q.id; });
    running_.insert(at, std::move(p));
    preempted_.pop_front();
  }
  if (!preempted_.empty()) {
    reserved_blocks_ = owed;
    return;
  }
  std::lock_guard<std::mutex> lock(queue_mu_);
  while (!waiting_.empty() && room()) {
    Request& r = waiting_.front();
    const int64_t need = b.blocks_for(next_context(r));
    if (need + owed > free_blocks()) break;  // first come, first served: no overtaking
    owed += need;
    r.reserved = 0;  // nothing is reserved up front: preemption handles the pressure
    r.seq = session_.blocks_->add_sequence();
    running_.push_back(std::move(r));
    waiting_.pop_front();
  }
  reserved_blocks_ = owed;
}

void Engine::park_preempted() {
  bool any = false;
  for (Request& r : running_) {
    if (!r.preempt_now) continue;
    any = true;
    r.preempt_now = false;
    const auto at = std::upper_bound(preempted_.begin(), preempted_.end(), r.id,
                                     [](int64_t id, const Request& q) { return id < q.id; });
    preempted_.insert(at, std::move(r));
    r.done = true;  // the moved-from husk leaves running_ below
  }
  running_.erase(
      std::remove_if(running_.begin(), running_.end(), [](const Request& r) { return r.done; }),
      running_.end());
  // The stashes' copies are complete before anything (a cancellation) can free them.
  if (any) synchronize(session_.ctx_);
}

}  // namespace fastattn::runtime

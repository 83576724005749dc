// PoolAllocator: a private pool drawn from another allocator. A block freed by the pool's users
// goes back to this pool only (reused for a later request of the pool), and everything returns
// to the upstream allocator when the pool is destroyed.
//
// What it is for: a captured CUDA graph replays with the addresses its scratch had at capture.
// Drawing that scratch (activations, kernel workspaces freed during the capture) from a pool of
// its own keeps it apart from memory the rest of the program may be handed, for as long as the
// graph lives. Reuse inside the pool is safe for work on one stream (stream order), like the
// caching device allocator's.
#pragma once

#include <cstddef>
#include <map>
#include <mutex>
#include <unordered_map>

#include "fastattn/core/allocator.h"

namespace fastattn {

class PoolAllocator final : public Allocator {
 public:
  explicit PoolAllocator(Allocator* upstream) : upstream_(upstream) {}
  // Returns every block upstream. Work still queued that uses the pool's memory must be finished
  // (the caller synchronises its stream) and no block may still be held by a user.
  ~PoolAllocator() override;
  PoolAllocator(const PoolAllocator&) = delete;
  PoolAllocator& operator=(const PoolAllocator&) = delete;

  void* allocate(size_t nbytes) override;
  void deallocate(void* p, size_t nbytes) override;
  Device device() const override { return upstream_->device(); }
  const char* name() const override { return "pool allocator"; }
  // Bytes taken from upstream (in use + free in the pool).
  size_t reserved_bytes() const;

 private:
  Allocator* upstream_;
  mutable std::mutex mu_;
  std::multimap<size_t, void*> free_;        // free blocks by size
  std::unordered_map<void*, size_t> sizes_;  // every block taken from upstream
  size_t reserved_ = 0;
};

}  // namespace fastattn

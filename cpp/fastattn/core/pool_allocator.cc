#include "fastattn/core/pool_allocator.h"

#include "fastattn/core/error.h"

namespace fastattn {
namespace {

constexpr size_t kRound = 256;

}  // namespace

PoolAllocator::~PoolAllocator() {
  for (const auto& [p, size] : sizes_) upstream_->deallocate(p, size);
}

void* PoolAllocator::allocate(size_t nbytes) {
  if (nbytes == 0) return nullptr;
  const size_t size = (nbytes + kRound - 1) / kRound * kRound;
  std::lock_guard<std::mutex> lock(mu_);
  // A free block that fits without wasting more than half of it.
  auto it = free_.lower_bound(size);
  if (it != free_.end() && it->first <= 2 * size) {
    void* p = it->second;
    free_.erase(it);
    return p;
  }
  void* p = upstream_->allocate(size);
  sizes_[p] = size;
  reserved_ += size;
  return p;
}

void PoolAllocator::deallocate(void* p, size_t) {
  if (p == nullptr) return;
  std::lock_guard<std::mutex> lock(mu_);
  auto it = sizes_.find(p);
  FA_ASSERT(it != sizes_.end(), "pool allocator: freeing a pointer it did not give");
  free_.emplace(it->second, p);
}

size_t PoolAllocator::reserved_bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return reserved_;
}

}  // namespace fastattn

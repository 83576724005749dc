// The caching device allocator and the pinned host allocator of CUDA builds.
//
// Caching: a freed block goes to a per-device free list instead of cudaFree, and a later request
// takes the smallest cached block that fits without wasting much (best fit within 25% + 1 MiB).
// So the decode loop, whose activation buffers have the same sizes every step, never calls
// cudaMalloc after the first steps. Reuse is safe for work on one stream (stream order); a block
// used by another stream must be synchronised by its user before it is freed.
// When cudaMalloc fails, the cache is released and the allocation retried once; then
// OutOfMemory names the device, the request and what is in use.
#include <cuda_runtime.h>

#include <map>
#include <memory>
#include <mutex>
#include <unordered_map>

#include "fastattn/core/allocator.h"
#include "fastattn/core/cuda/device_guard.h"
#include "fastattn/core/error.h"

namespace fastattn {
namespace {

constexpr size_t kSmallRound = 512;
constexpr size_t kLargeRound = size_t{2} << 20;  // 2 MiB
constexpr size_t kLargeFrom = size_t{1} << 20;
constexpr size_t kFitSlack = size_t{1} << 20;

size_t round_size(size_t n) {
  const size_t r = n < kLargeFrom ? kSmallRound : kLargeRound;
  return (n + r - 1) / r * r;
}

std::string mib(size_t n) { return std::to_string(n >> 20) + " MiB"; }

class CachingDeviceAllocator final : public Allocator {
 public:
  explicit CachingDeviceAllocator(int device) : device_(device) {}
  ~CachingDeviceAllocator() override = default;  // process exit: the driver frees device memory

  void* allocate(size_t nbytes) override {
    if (nbytes == 0) return nullptr;
    const size_t size = round_size(nbytes);
    std::lock_guard<std::mutex> lock(mu_);
    auto it = free_.lower_bound(size);
    if (it != free_.end() && it->first <= size + size / 4 + kFitSlack) {
      void* p = it->second;
      stats_.cached_bytes -= it->first;
      stats_.in_use_bytes += it->first;
      free_.erase(it);
      note_peak();
      return p;
    }
    const DeviceGuard guard(device_);
    void* p = nullptr;
    cudaError_t err = cudaMalloc(&p, size);
    if (err != cudaSuccess) {
      (void)cudaGetLastError();
      release_cached_locked();
      err = cudaMalloc(&p, size);
    }
    if (err != cudaSuccess) {
      (void)cudaGetLastError();
      size_t free_b = 0, total_b = 0;
      cudaMemGetInfo(&free_b, &total_b);
      FA_THROW_AS(OutOfMemory, "cuda:", device_, ": cannot allocate ", nbytes, " bytes (",
                  mib(nbytes), "): ", mib(stats_.in_use_bytes),
                  " in use by this process's FastAttention allocator, ", mib(free_b), " free of ",
                  mib(total_b), " (", cudaGetErrorString(err), ")");
    }
    sizes_[p] = size;
    stats_.in_use_bytes += size;
    stats_.reserved_bytes += size;
    note_peak();
    return p;
  }

  void deallocate(void* p, size_t) override {
    if (p == nullptr) return;
    std::lock_guard<std::mutex> lock(mu_);
    auto it = sizes_.find(p);
    FA_ASSERT(it != sizes_.end(), "cuda:", device_,
              ": freeing a pointer this allocator did not give");
    stats_.in_use_bytes -= it->second;
    stats_.cached_bytes += it->second;
    free_.emplace(it->second, p);
  }

  Device device() const override { return Device{DeviceType::kCUDA, device_}; }
  const char* name() const override { return "CUDA caching allocator"; }

  DeviceAllocatorStats stats() {
    std::lock_guard<std::mutex> lock(mu_);
    return stats_;
  }
  void release_cached() {
    std::lock_guard<std::mutex> lock(mu_);
    release_cached_locked();
  }

 private:
  void note_peak() {
    if (stats_.in_use_bytes > stats_.peak_in_use_bytes)
      stats_.peak_in_use_bytes = stats_.in_use_bytes;
  }
  void release_cached_locked() {
    const DeviceGuard guard(device_);
    // cudaFree synchronises the device, so no queued kernel still uses a released block.
    for (auto& [size, p] : free_) {
      cudaFree(p);
      sizes_.erase(p);
      stats_.reserved_bytes -= size;
    }
    free_.clear();
    stats_.cached_bytes = 0;
  }

  int device_;
  std::mutex mu_;
  std::multimap<size_t, void*> free_;        // cached blocks by size
  std::unordered_map<void*, size_t> sizes_;  // every block this allocator holds
  DeviceAllocatorStats stats_;
};

class PinnedHostAllocator final : public Allocator {
 public:
  void* allocate(size_t nbytes) override {
    if (nbytes == 0) return nullptr;
    void* p = nullptr;
    const cudaError_t err = cudaHostAlloc(&p, nbytes, cudaHostAllocPortable);
    if (err != cudaSuccess) {
      (void)cudaGetLastError();
      FA_THROW_AS(OutOfMemory, name(), ": cannot page-lock ", nbytes, " bytes (", mib(nbytes),
                  ") of host memory: ", cudaGetErrorString(err));
    }
    return p;
  }
  void deallocate(void* p, size_t) override {
    if (p != nullptr) cudaFreeHost(p);
  }
  Device device() const override { return Device{DeviceType::kCUDAHost, 0}; }
  const char* name() const override { return "pinned host allocator"; }
};

CachingDeviceAllocator& caching_allocator(int device) {
  static std::mutex mu;
  static std::map<int, std::unique_ptr<CachingDeviceAllocator>> allocators;
  std::lock_guard<std::mutex> lock(mu);
  auto& a = allocators[device];
  if (!a) {
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess) {
      (void)cudaGetLastError();
      count = 0;
    }
    FA_CHECK(device >= 0 && device < count, "device cuda:", device, " does not exist (", count,
             " CUDA device(s) visible)");
    a = std::make_unique<CachingDeviceAllocator>(device);
  }
  return *a;
}

}  // namespace

Allocator* device_allocator(int device) { return &caching_allocator(device); }

DeviceAllocatorStats device_allocator_stats(int device) {
  return caching_allocator(device).stats();
}

void device_allocator_release_cached(int device) { caching_allocator(device).release_cached(); }

namespace detail {
Allocator* cuda_pinned_host_allocator() {
  static PinnedHostAllocator a;
  return &a;
}
}  // namespace detail

}  // namespace fastattn

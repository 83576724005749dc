// Allocators and the owning Buffer. Kernels never allocate on their own: they take a Context
// whose allocator hands out scratch memory, so a GPU build can pool it (no malloc in the decode loop).
#pragma once

#include <cstddef>
#include <memory>
#include <vector>

#include "fastattn/core/device.h"
#include "fastattn/core/tensor.h"

namespace fastattn {

class Allocator {
 public:
  virtual ~Allocator() = default;
  virtual void* allocate(size_t nbytes) = 0;
  virtual void deallocate(void* p, size_t nbytes) = 0;
  virtual Device device() const = 0;
  virtual const char* name() const = 0;
};

// 64-byte aligned host memory.
Allocator* host_allocator();
// Page-locked host memory for fast host<->GPU copies (cudaHostAlloc in CUDA builds). Without
// CUDA in the build it is ordinary aligned host memory (there is no GPU to copy to).
Allocator* pinned_host_allocator();

#if defined(FASTATTN_WITH_CUDA)
// Caching allocator for device memory of GPU `device` (one per device, thread-safe): freed
// blocks are kept for reuse, so steady-state loops do not call cudaMalloc. Throws
// InvalidArgument for a device that does not exist, OutOfMemory when the GPU is full.
Allocator* device_allocator(int device);

struct DeviceAllocatorStats {
  size_t in_use_bytes = 0;    // handed out
  size_t cached_bytes = 0;    // freed, kept for reuse
  size_t reserved_bytes = 0;  // in use + cached (what cudaMalloc gave)
  size_t peak_in_use_bytes = 0;
};
DeviceAllocatorStats device_allocator_stats(int device);
// Returns the cached blocks to the driver (synchronises the device).
void device_allocator_release_cached(int device);

namespace detail {
Allocator* cuda_pinned_host_allocator();
}  // namespace detail
#endif

// Owning, move-only allocation with a Tensor view over it.
class Buffer {
 public:
  Buffer() = default;
  Buffer(Allocator* alloc, size_t nbytes);
  ~Buffer();
  Buffer(Buffer&& o) noexcept;
  Buffer& operator=(Buffer&& o) noexcept;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;

  void* data() const { return data_; }
  size_t nbytes() const { return nbytes_; }
  Allocator* allocator() const { return alloc_; }

 private:
  void release();
  Allocator* alloc_ = nullptr;
  void* data_ = nullptr;
  size_t nbytes_ = 0;
};

// A Buffer that remembers its shape: the usual way to own an activation or scratch tensor.
class OwnedTensor {
 public:
  OwnedTensor() = default;
  OwnedTensor(Allocator* alloc, DType dtype, const std::vector<int64_t>& shape);
  const Tensor& view() const { return view_; }
  Tensor& view() { return view_; }
  operator const Tensor&() const { return view_; }  // NOLINT: intended implicit view
  template <typename T>
  T* data_as() const {
    return view_.data_as<T>();
  }
  // Grows (never shrinks) the allocation and re-shapes the view; contents are not kept.
  void resize(DType dtype, const std::vector<int64_t>& shape);
  bool defined() const { return view_.defined(); }

 private:
  Allocator* alloc_ = nullptr;
  Buffer buf_;
  Tensor view_;
};

}  // namespace fastattn

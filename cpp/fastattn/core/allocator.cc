#include "fastattn/core/allocator.h"

#include <cstdlib>
#include <new>
#include <utility>

namespace fastattn {
namespace {

constexpr size_t kHostAlignment = 64;

class HostAllocator final : public Allocator {
 public:
  explicit HostAllocator(DeviceType type) : type_(type) {}
  void* allocate(size_t nbytes) override {
    if (nbytes == 0) return nullptr;
    const size_t rounded = (nbytes + kHostAlignment - 1) / kHostAlignment * kHostAlignment;
    void* p = std::aligned_alloc(kHostAlignment, rounded);
    if (p == nullptr) {
      FA_THROW_AS(OutOfMemory, name(), ": failed to allocate ", nbytes, " bytes of host memory");
    }
    return p;
  }
  void deallocate(void* p, size_t) override { std::free(p); }
  Device device() const override { return Device{type_, 0}; }
  const char* name() const override {
    return type_ == DeviceType::kCPU ? "host allocator" : "pinned host allocator";
  }

 private:
  DeviceType type_;
};

}  // namespace

Allocator* host_allocator() {
  static HostAllocator a(DeviceType::kCPU);
  return &a;
}

Allocator* pinned_host_allocator() {
#if defined(FASTATTN_WITH_CUDA)
  return detail::cuda_pinned_host_allocator();
#else
  // No CUDA runtime in this build: page-locking would buy nothing, so this is host memory
  // labelled as CUDAHost for the code paths that expect it.
  static HostAllocator a(DeviceType::kCUDAHost);
  return &a;
#endif
}

Buffer::Buffer(Allocator* alloc, size_t nbytes) : alloc_(alloc), nbytes_(nbytes) {
  data_ = alloc_->allocate(nbytes);
}

Buffer::~Buffer() { release(); }

Buffer::Buffer(Buffer&& o) noexcept
    : alloc_(std::exchange(o.alloc_, nullptr)),
      data_(std::exchange(o.data_, nullptr)),
      nbytes_(std::exchange(o.nbytes_, 0)) {}

Buffer& Buffer::operator=(Buffer&& o) noexcept {
  if (this != &o) {
    release();
    alloc_ = std::exchange(o.alloc_, nullptr);
    data_ = std::exchange(o.data_, nullptr);
    nbytes_ = std::exchange(o.nbytes_, 0);
  }
  return *this;
}

void Buffer::release() {
  if (alloc_ != nullptr && data_ != nullptr) alloc_->deallocate(data_, nbytes_);
  data_ = nullptr;
  nbytes_ = 0;
}

OwnedTensor::OwnedTensor(Allocator* alloc, DType dtype, const std::vector<int64_t>& shape)
    : alloc_(alloc) {
  resize(dtype, shape);
}

void OwnedTensor::resize(DType dtype, const std::vector<int64_t>& shape) {
  FA_ASSERT(alloc_ != nullptr, "OwnedTensor without an allocator");
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  const size_t need = static_cast<size_t>(n) * dtype_size(dtype);
  if (need > buf_.nbytes()) buf_ = Buffer(alloc_, need);
  view_ = Tensor(buf_.data(), dtype, shape, alloc_->device());
}

}  // namespace fastattn

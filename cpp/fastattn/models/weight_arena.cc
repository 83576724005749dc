#include "fastattn/models/weight_arena.h"

#include <filesystem>

#include "fastattn/core/context.h"
#include "fastattn/core/copy.h"
#include "fastattn/core/error.h"

namespace fastattn::models {
namespace {

constexpr size_t kAlign = 256;  // every tensor starts 256-byte aligned (vector loads, cuBLAS)

size_t tensor_files_bytes(const std::string& dir) {
  size_t total = 0;
  size_t count = 0;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    if (e.path().extension() == ".fat") {
      total += static_cast<size_t>(e.file_size(ec));
      ++count;
    }
  }
  return total + count * kAlign;
}

Allocator* arena_allocator(Device device) {
#if defined(FASTATTN_WITH_CUDA)
  if (device.type == DeviceType::kCUDA) return device_allocator(device.index);
#endif
  FA_CHECK(device.type == DeviceType::kCPU, "device ", device.str(),
           ": this build has no CUDA support (build with a CUDA compiler, see the README)");
  return nullptr;
}

}  // namespace

WeightArena::WeightArena(Device device, const std::string& rank_dir) : device_(device) {
  Allocator* a = arena_allocator(device);
  if (a == nullptr) return;
  allocate(a, tensor_files_bytes(rank_dir), rank_dir);
}

WeightArena::WeightArena(Device device, size_t data_bytes, size_t num_tensors,
                         const std::string& source)
    : device_(device) {
  Allocator* a = arena_allocator(device);
  if (a == nullptr) return;
  allocate(a, data_bytes + num_tensors * kAlign, source);
}

void WeightArena::allocate(Allocator* a, size_t bytes, const std::string& source) {
  try {
    arena_ = Buffer(a, bytes);
  } catch (const OutOfMemory& e) {
    FA_THROW_AS(OutOfMemory, source, ": the weights need ", bytes >> 20, " MiB on ", device_.str(),
                ", which does not have them free: ", e.what());
  }
}

Tensor WeightArena::place(const Tensor& host) {
  if (device_.type == DeviceType::kCPU) return host;
  const size_t n = host.nbytes();
  FA_ASSERT(used_ + n <= arena_.nbytes(), "weight arena overflow");
  char* dst = static_cast<char*>(arena_.data()) + used_;
  Context ctx;
  ctx.device = device_;
  detail::copy_bytes(ctx, dst, device_, host.data(), host.device(), n);
  used_ += (n + kAlign - 1) / kAlign * kAlign;
  return Tensor(dst, host.dtype(), host.shape(), device_);
}

void WeightArena::finish() {
  Context ctx;
  ctx.device = device_;
  synchronize(ctx);
}

}  // namespace fastattn::models

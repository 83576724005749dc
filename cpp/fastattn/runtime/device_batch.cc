#include "fastattn/runtime/device_batch.h"

#include <cstring>
#include <utility>

#include "fastattn/core/copy.h"
#include "fastattn/core/error.h"

namespace fastattn::runtime {

layers::ForwardBatch DeviceBatch::upload(const Context& ctx, const layers::ForwardBatch& host) {
  if (ctx.device.type != DeviceType::kCUDA) return host;
  using FB = layers::ForwardBatch;
  // (host field, device field): index tensors the GPU kernels read.
  const std::pair<Tensor FB::*, Tensor FB::*> fields[] = {
      {&FB::token_ids, &FB::token_ids},       {&FB::positions, &FB::positions},
      {&FB::slot_mapping, &FB::slot_mapping}, {&FB::cu_seqlens_q, &FB::cu_seqlens_q},
      {&FB::block_table, &FB::block_table},   {&FB::seqlens_k, &FB::seqlens_k},
      {&FB::cu_seqlens_k, &FB::cu_seqlens_k}, {&FB::host_cu_seqlens_k, &FB::host_cu_seqlens_k_dev}};
  int64_t total = 0;
  for (const auto& f : fields) total += (host.*f.first).defined() ? (host.*f.first).numel() : 0;
  const int buf = next_;
  next_ = 1 - next_;
  // The copy queued two uploads ago read this buffer: it must have run before the buffer is
  // rewritten (or freed by a resize). Usually long done; a no-op before the buffer's first use.
  copied_[buf].wait();
  OwnedTensor& staging = staging_[buf];
  staging.resize(DType::kInt32, {total});
  device_.resize(DType::kInt32, {total});
  layers::ForwardBatch dev = host;
  int32_t* stage = staging.data_as<int32_t>();
  int32_t* on_dev = device_.data_as<int32_t>();
  int64_t off = 0;
  for (const auto& f : fields) {
    const Tensor& t = host.*f.first;
    if (!t.defined()) continue;
    FA_ASSERT(t.dtype() == DType::kInt32 && t.is_contiguous(), "batch index tensors are int32");
    std::memcpy(stage + off, t.data(), t.nbytes());
    dev.*f.second = Tensor(on_dev + off, DType::kInt32, t.shape(), ctx.device);
    off += t.numel();
  }
  detail::copy_bytes(ctx, on_dev, ctx.device, stage, staging.view().device(),
                     static_cast<size_t>(total) * sizeof(int32_t));
  copied_[buf].record(ctx);
  return dev;
}

}  // namespace fastattn::runtime

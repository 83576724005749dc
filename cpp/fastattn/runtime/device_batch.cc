#include "fastattn/runtime/device_batch.h"

#include <cstring>

#include "fastattn/core/copy.h"
#include "fastattn/core/error.h"

namespace fastattn::runtime {

layers::ForwardBatch DeviceBatch::upload(const Context& ctx, const layers::ForwardBatch& host) {
  if (ctx.device.type != DeviceType::kCUDA) return host;
  Tensor layers::ForwardBatch::*fields[] = {
      &layers::ForwardBatch::token_ids,    &layers::ForwardBatch::positions,
      &layers::ForwardBatch::slot_mapping, &layers::ForwardBatch::cu_seqlens_q,
      &layers::ForwardBatch::block_table,  &layers::ForwardBatch::seqlens_k};
  int64_t total = 0;
  for (auto f : fields) total += (host.*f).numel();
  staging_.resize(DType::kInt32, {total});
  device_.resize(DType::kInt32, {total});
  layers::ForwardBatch dev = host;
  int32_t* stage = staging_.data_as<int32_t>();
  int32_t* on_dev = device_.data_as<int32_t>();
  int64_t off = 0;
  for (auto f : fields) {
    const Tensor& t = host.*f;
    FA_ASSERT(t.dtype() == DType::kInt32 && t.is_contiguous(), "batch index tensors are int32");
    std::memcpy(stage + off, t.data(), t.nbytes());
    dev.*f = Tensor(on_dev + off, DType::kInt32, t.shape(), ctx.device);
    off += t.numel();
  }
  detail::copy_bytes(ctx, on_dev, ctx.device, stage, staging_.view().device(),
                     static_cast<size_t>(total) * sizeof(int32_t));
  return dev;
}

}  // namespace fastattn::runtime

// DeviceBatch: puts a ForwardBatch's index tensors on the device the model runs on. The int32
// arrays are packed into one pinned staging buffer and sent with a single host-to-device copy on
// ctx.stream, so a decode step costs one small copy, not six. The staging buffer is reused: the
// caller synchronises the stream once per step (it does, to read the sampled tokens) before the
// next upload overwrites it.
#pragma once

#include "fastattn/core/allocator.h"
#include "fastattn/core/context.h"
#include "fastattn/layers/forward_batch.h"

namespace fastattn::runtime {

class DeviceBatch {
 public:
  DeviceBatch(Allocator* device_alloc, Allocator* staging_alloc)
      : device_(device_alloc, DType::kInt32, {0}), staging_(staging_alloc, DType::kInt32, {0}) {}

  // The batch with every index tensor on ctx's device (views into this object's buffers, valid
  // until the next upload). On the CPU the host batch is returned as is.
  layers::ForwardBatch upload(const Context& ctx, const layers::ForwardBatch& host);

 private:
  OwnedTensor device_;
  OwnedTensor staging_;
};

}  // namespace fastattn::runtime

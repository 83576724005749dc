// DeviceBatch: puts a ForwardBatch's index tensors on the device the model runs on. The int32
// arrays are packed into a pinned staging buffer and sent with a single host-to-device copy on
// ctx.stream, so a decode step costs one small copy, not six. That copy runs when the stream gets
// to it, which may be after upload() returns and after the host has built the next batch (a
// prompt's prefill chunks are queued one after another without a host wait). So there are two
// staging buffers, used in turn, and an upload first waits (on the host) until the copy that last
// read its buffer has run: a buffer is never overwritten while a queued copy still has to read it.
#pragma once

#include "fastattn/core/allocator.h"
#include "fastattn/core/context.h"
#include "fastattn/core/copy.h"
#include "fastattn/layers/forward_batch.h"

namespace fastattn::runtime {

class DeviceBatch {
 public:
  DeviceBatch(Allocator* device_alloc, Allocator* staging_alloc)
      : device_(device_alloc, DType::kInt32, {0}),
        staging_{OwnedTensor(staging_alloc, DType::kInt32, {0}),
                 OwnedTensor(staging_alloc, DType::kInt32, {0})} {}

  // The batch with every index tensor on ctx's device (views into this object's buffers, valid
  // until the next upload). On the CPU the host batch is returned as is.
  layers::ForwardBatch upload(const Context& ctx, const layers::ForwardBatch& host);

 private:
  OwnedTensor device_;
  OwnedTensor staging_[2];
  StreamEvent copied_[2];  // after the copy that last read staging_[i]
  int next_ = 0;           // the staging buffer the next upload fills
};

}  // namespace fastattn::runtime

// Copies between devices: host, pinned host and GPU memory, in any direction. GPU copies are
// enqueued on ctx.stream (asynchronous with respect to the host where CUDA allows it: a copy
// to or from pageable host memory returns once the host buffer may be reused).
#pragma once

#include <cstdint>
#include <vector>

#include "fastattn/core/context.h"
#include "fastattn/core/tensor.h"

namespace fastattn {

// dst = src: same dtype and number of elements, both contiguous. Throws InvalidArgument naming
// the mismatch.
void copy_tensor(const Context& ctx, const Tensor& src, Tensor& dst);

// dst[i, :] = src[rows[i], :] for 2-D tensors of one dtype with contiguous rows (row strides may
// differ). Row indices are host values, checked against src.
void copy_rows(const Context& ctx, const Tensor& src, const std::vector<int64_t>& rows,
               Tensor& dst);

// dst = src for [rows, cols] matrices of one dtype whose rows are contiguous but may be strided
// (e.g. the Q columns of a fused QKV projection); one 2-D copy on ctx.stream.
void copy_matrix(const Context& ctx, const Tensor& src, Tensor& dst);

// Blocks until the work queued on ctx.stream has finished (a no-op for the CPU).
void synchronize(const Context& ctx);

// A marker in ctx.stream's work: record() it after some work, then wait() blocks the host only
// until that work is done (later work on the stream keeps running). A no-op on the CPU.
class StreamEvent {
 public:
  StreamEvent() = default;
  ~StreamEvent();
  StreamEvent(const StreamEvent&) = delete;
  StreamEvent& operator=(const StreamEvent&) = delete;
  void record(const Context& ctx);
  void wait();

 private:
  void* event_ = nullptr;  // cudaEvent_t, created on first record on a GPU
};

namespace detail {
// Raw byte copy between any two devices on ctx.stream (CUDA builds; plain memcpy otherwise).
void copy_bytes(const Context& ctx, void* dst, Device dst_dev, const void* src, Device src_dev,
                size_t nbytes);
#if defined(FASTATTN_WITH_CUDA)
void cuda_copy_2d(const Context& ctx, void* dst, size_t dpitch, const void* src, size_t spitch,
                  size_t width, size_t rows);
void* cuda_event_record(const Context& ctx, void* event);
void cuda_event_wait(void* event);
void cuda_event_destroy(void* event);
#endif
}  // namespace detail

}  // namespace fastattn

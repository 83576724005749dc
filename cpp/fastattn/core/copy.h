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
void copy_rows(const Context& ctx, const Tensor& src, const std::vector<int64_t>& rows, Tensor& dst);

// Blocks until the work queued on ctx.stream has finished (a no-op for the CPU).
void synchronize(const Context& ctx);

namespace detail {
// Raw byte copy between any two devices on ctx.stream (CUDA builds; plain memcpy otherwise).
void copy_bytes(const Context& ctx, void* dst, Device dst_dev, const void* src, Device src_dev,
                size_t nbytes);
}  // namespace detail

}  // namespace fastattn

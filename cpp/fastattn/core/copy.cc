#include "fastattn/core/copy.h"

#include <cstring>

#include "fastattn/core/error.h"

namespace fastattn {

#if defined(FASTATTN_WITH_CUDA)
namespace detail {
void cuda_copy_bytes(const Context& ctx, void* dst, const void* src, size_t nbytes);
void cuda_synchronize(const Context& ctx);
}  // namespace detail
#endif

void copy_matrix(const Context& ctx, const Tensor& src, Tensor& dst) {
  FA_CHECK(
      src.dim() == 2 && dst.dim() == 2 && src.shape() == dst.shape() && src.dtype() == dst.dtype(),
      "copy_matrix: ", src.describe(), " -> ", dst.describe());
  FA_CHECK(src.last_dim_contiguous() && dst.last_dim_contiguous(),
           "copy_matrix: rows must be contiguous");
  const size_t es = dtype_size(src.dtype());
  const size_t width = static_cast<size_t>(src.size(1)) * es;
  const auto rows = static_cast<size_t>(src.size(0));
  if (rows == 0 || width == 0) return;
  const bool on_gpu =
      src.device().type == DeviceType::kCUDA || dst.device().type == DeviceType::kCUDA;
  if (on_gpu) {
#if defined(FASTATTN_WITH_CUDA)
    detail::cuda_copy_2d(ctx, dst.data(), static_cast<size_t>(dst.stride(0)) * es, src.data(),
                         static_cast<size_t>(src.stride(0)) * es, width, rows);
    return;
#endif
  }
  for (size_t r = 0; r < rows; ++r) {
    detail::copy_bytes(
        ctx, static_cast<char*>(dst.data()) + r * static_cast<size_t>(dst.stride(0)) * es,
        dst.device(),
        static_cast<const char*>(src.data()) + r * static_cast<size_t>(src.stride(0)) * es,
        src.device(), width);
  }
}

StreamEvent::~StreamEvent() {
#if defined(FASTATTN_WITH_CUDA)
  if (event_ != nullptr) detail::cuda_event_destroy(event_);
#endif
}

void StreamEvent::record(const Context& ctx) {
#if defined(FASTATTN_WITH_CUDA)
  if (ctx.device.type == DeviceType::kCUDA) event_ = detail::cuda_event_record(ctx, event_);
#else
  (void)ctx;
#endif
}

void StreamEvent::wait() {
#if defined(FASTATTN_WITH_CUDA)
  if (event_ != nullptr) detail::cuda_event_wait(event_);
#endif
}

namespace detail {

void copy_bytes(const Context& ctx, void* dst, Device dst_dev, const void* src, Device src_dev,
                size_t nbytes) {
  if (nbytes == 0) return;
  if (dst_dev.type != DeviceType::kCUDA && src_dev.type != DeviceType::kCUDA) {
    std::memcpy(dst, src, nbytes);
    return;
  }
#if defined(FASTATTN_WITH_CUDA)
  cuda_copy_bytes(ctx, dst, src, nbytes);  // unified addressing: the pointers say where they live
#else
  (void)ctx;
  FA_THROW_AS(InvalidArgument, "copy between ", src_dev.str(), " and ", dst_dev.str(),
              ": this build has no CUDA support");
#endif
}

}  // namespace detail

void copy_tensor(const Context& ctx, const Tensor& src, Tensor& dst) {
  FA_CHECK(src.dtype() == dst.dtype(), "copy_tensor: dtype ", dtype_name(src.dtype()), " -> ",
           dtype_name(dst.dtype()));
  FA_CHECK(src.numel() == dst.numel(), "copy_tensor: ", src.numel(), " elements -> ", dst.numel());
  FA_CHECK(src.is_contiguous() && dst.is_contiguous(),
           "copy_tensor: both tensors must be contiguous (", src.describe(), " -> ", dst.describe(),
           ")");
  detail::copy_bytes(ctx, dst.data(), dst.device(), src.data(), src.device(), src.nbytes());
}

void copy_rows(const Context& ctx, const Tensor& src, const std::vector<int64_t>& rows,
               Tensor& dst) {
  FA_CHECK(src.dim() == 2 && dst.dim() == 2, "copy_rows: 2-D tensors expected, got ",
           src.describe(), " -> ", dst.describe());
  FA_CHECK(src.dtype() == dst.dtype() && src.size(1) == dst.size(1), "copy_rows: ", src.describe(),
           " -> ", dst.describe());
  FA_CHECK(static_cast<int64_t>(rows.size()) == dst.size(0), "copy_rows: ", rows.size(),
           " rows into ", dst.describe());
  FA_CHECK(src.last_dim_contiguous() && dst.last_dim_contiguous(),
           "copy_rows: rows must be contiguous");
  const size_t row_bytes = static_cast<size_t>(src.size(1)) * dtype_size(src.dtype());
  for (size_t i = 0; i < rows.size(); ++i) {
    const int64_t r = rows[i];
    FA_CHECK(r >= 0 && r < src.size(0), "copy_rows: row ", r, " out of range for ", src.describe());
    detail::copy_bytes(ctx, dst.ptr_at({static_cast<int64_t>(i)}), dst.device(), src.ptr_at({r}),
                       src.device(), row_bytes);
  }
}

void synchronize(const Context& ctx) {
#if defined(FASTATTN_WITH_CUDA)
  if (ctx.device.type == DeviceType::kCUDA) detail::cuda_synchronize(ctx);
#else
  (void)ctx;
#endif
}

}  // namespace fastattn

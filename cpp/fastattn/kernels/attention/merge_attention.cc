// merge_attention (kernels/attention/merge.h): checks the two partial results once, for every
// device, then merges them with kernels/cuda/ (CUDA tensors, CUDA builds) or kernels/cpu/.
#include <string>
#include <vector>

#include "fastattn/core/error.h"
#include "fastattn/kernels/attention/merge.h"
#include "fastattn/kernels/cpu/merge_attention_cpu.h"
#if defined(FASTATTN_WITH_CUDA)
#include "fastattn/kernels/cuda/attention/merge_attention_cuda.h"
#endif

namespace fastattn::kernels {
namespace {

void check_part(const Tensor& o, const char* name, const std::vector<int64_t>& shape) {
  FA_CHECK(o.defined() && o.dim() == 3 && o.shape() == shape, name, ": expected shape ",
           shape_str(shape), ", got ", o.defined() ? o.describe() : std::string("undefined"));
  check_floating(o, name);
  check_last_dim_contiguous(o, name);
}

void check_lse(const Tensor& l, const char* name, int64_t H, int64_t T) {
  check_dtype(l, name, DType::kFloat32);
  check_shape(l, name, {H, T});
  check_last_dim_contiguous(l, name);
}

}  // namespace

void merge_attention(const Context& ctx, const Tensor& out_a, const Tensor& lse_a,
                     const Tensor& out_b, const Tensor& lse_b, Tensor& out, Tensor* lse_out) {
  FA_CHECK(out.defined() && out.dim() == 3, "out: expected [T, H, D], got ", out.describe());
  const int64_t T = out.size(0), H = out.size(1), D = out.size(2);
  check_part(out, "out", {T, H, D});
  check_part(out_a, "out_a", {T, H, D});
  check_part(out_b, "out_b", {T, H, D});
  check_lse(lse_a, "lse_a", H, T);
  check_lse(lse_b, "lse_b", H, T);
  if (lse_out != nullptr) check_lse(*lse_out, "lse_out", H, T);
  const Device dev = out.device();
  for (const Tensor* t : {&out_a, &lse_a, &out_b, &lse_b}) {
    FA_CHECK(t->device() == dev, "merge_attention: all tensors must be on ", dev.str(), ", got ",
             t->describe());
  }
#if defined(FASTATTN_WITH_CUDA)
  if (dev.type == DeviceType::kCUDA) {
    cuda::merge_attention(ctx, out_a, lse_a, out_b, lse_b, out, lse_out);
    return;
  }
#endif
  cpu::merge_attention_cpu(ctx, out_a, lse_a, out_b, lse_b, out, lse_out);
}

}  // namespace fastattn::kernels

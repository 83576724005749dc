// The CPU merge of two partial attention results by log-sum-exp (kernels/attention/merge.h);
// kernels/attention/merge_attention.cc has checked the arguments.
#include <cmath>
#include <vector>

#include "fastattn/kernels/cpu/merge_attention_cpu.h"

namespace fastattn::kernels {

void cpu::merge_attention_cpu(const Context& ctx, const Tensor& out_a, const Tensor& lse_a,
                              const Tensor& out_b, const Tensor& lse_b, Tensor& out,
                              Tensor* lse_out) {
  const int64_t T = out.size(0), H = out.size(1), D = out.size(2);
  std::vector<float> a(static_cast<size_t>(D)), b(static_cast<size_t>(D));
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t h = 0; h < H; ++h) {
      const float la = lse_a.data_as<float>()[h * lse_a.stride(0) + t];
      const float lb = lse_b.data_as<float>()[h * lse_b.stride(0) + t];
      const float m = std::fmax(la, lb);
      const float wa = std::isinf(m) && m < 0 ? 0.f : std::exp(la - m);
      const float wb = std::isinf(m) && m < 0 ? 0.f : std::exp(lb - m);
      const float inv = wa + wb > 0.f ? 1.f / (wa + wb) : 0.f;
      convert_to_float(out_a.ptr_at({t, h}), out_a.dtype(), a.data(), D);
      convert_to_float(out_b.ptr_at({t, h}), out_b.dtype(), b.data(), D);
      for (int64_t d = 0; d < D; ++d) {
        a[static_cast<size_t>(d)] =
            (wa * a[static_cast<size_t>(d)] + wb * b[static_cast<size_t>(d)]) * inv;
      }
      convert_from_float(a.data(), out.ptr_at({t, h}), out.dtype(), D);
      if (lse_out != nullptr) {
        lse_out->data_as<float>()[h * lse_out->stride(0) + t] =
            wa + wb > 0.f ? m + std::log(wa + wb) : -INFINITY;
      }
    }
  }
  (void)ctx;
}

}  // namespace fastattn::kernels

// Argument checks and launch of the CUDA norm kernels (norm_kernels.cu).
#include "fastattn/kernels/cuda/norm_cuda.h"

#include <cmath>
#include <cstdint>
#include <limits>

#include "fastattn/core/cuda/cuda_check.h"
#include "fastattn/kernels/cuda/launch_checks.h"
#include "fastattn/kernels/cuda/norm_launch.h"

namespace fastattn::kernels::cuda {
namespace {

// A [T, H] activation on `ref`'s GPU in `ref`'s dtype, last dimension contiguous.
void check_rows(const Tensor& t, const char* name, const Tensor& ref, const char* ref_name,
                int64_t T, int64_t H) {
  check_same_device(t, name, ref, ref_name);
  check_dim(t, name, 2);
  check_same_dtype(t, name, ref, ref_name);
  check_shape(t, name, {T, H});
  check_last_dim_contiguous(t, name);
  FA_CHECK(T <= 1 || t.stride(0) >= H, name, ": row stride ", t.stride(0),
           " is smaller than its row length ", H);
}

// Row pitch for the kernel (a single row may carry any stride).
int64_t pitch(const Tensor& t) { return t.size(0) <= 1 ? t.size(1) : t.stride(0); }

void check_vector(const Tensor& t, const char* name, const Tensor& ref, const char* ref_name,
                  int64_t H) {
  check_same_device(t, name, ref, ref_name);
  check_floating(t, name);
  check_shape(t, name, {H});
  check_contiguous(t, name);
}

// Everything but the activations: eps, weight, bias.
void fill_weights(const NormParams& p, const Tensor& weight, const Tensor& bias, const Tensor& ref,
                  const char* ref_name, int64_t H, NormLaunch& L) {
  FA_CHECK(std::isfinite(p.eps) && p.eps >= 0.0f, "norm: eps must be a finite number >= 0, got ",
           p.eps);
  FA_CHECK(weight.defined(), "weight: required, got an undefined tensor");
  check_vector(weight, "weight", ref, ref_name, H);
  L.weight = weight.data();
  L.weight_type = weight.dtype();
  if (bias.defined()) {
    FA_CHECK(p.type == NormType::kLayerNorm,
             "bias: RMSNorm takes no bias (pass an undefined tensor), got ", bias.describe());
    check_vector(bias, "bias", ref, ref_name, H);
    L.bias = bias.data();
    L.bias_type = bias.dtype();
  }
  L.eps = p.eps;
  L.layer_norm = p.type == NormType::kLayerNorm;
}

void launch(const Context& ctx, const Tensor& ref, NormLaunch& L) {
  FA_CHECK(L.rows <= std::numeric_limits<int32_t>::max(), "norm: ", L.rows,
           " rows exceed the CUDA grid limit");
  const int vec = vec16(L.act);
  const size_t es = dtype_size(L.act);
  bool ok = vector_ok(L.x, L.ldx, L.cols, es, vec) && vector_ok(L.out, L.ldo, L.cols, es, vec) &&
            vector_ok(L.weight, L.cols, L.cols, dtype_size(L.weight_type), vec);
  if (L.residual != nullptr) ok = ok && vector_ok(L.residual, L.ldr, L.cols, es, vec);
  if (L.bias != nullptr) ok = ok && vector_ok(L.bias, L.cols, L.cols, dtype_size(L.bias_type), vec);
  L.vec = ok ? vec : 1;
  if (L.rows == 0) return;
  const DeviceGuard device(ref.device().index);
  launch_norm(L, stream_of(ctx));
  FA_CUDA_CHECK_LAUNCH("norm_kernel");
}

// The launch shared by norm and add_norm: `lead` ([T, H], named `lead_name`) sets the shape and
// dtype that `out` must have; the caller fills in the inputs.
NormLaunch output_launch(const NormParams& p, const Tensor& lead, const char* lead_name,
                         const Tensor& weight, const Tensor& bias, Tensor& out) {
  check_activation_dtype(lead, lead_name);
  check_dim(lead, lead_name, 2);
  const int64_t T = lead.size(0), H = lead.size(1);
  FA_CHECK(H > 0, lead_name, ": hidden size must be positive, got ", lead.describe());
  check_rows(lead, lead_name, lead, lead_name, T, H);
  check_rows(out, "out", lead, lead_name, T, H);
  NormLaunch L;
  fill_weights(p, weight, bias, lead, lead_name, H, L);
  L.act = lead.dtype();
  L.out = out.data();
  L.ldo = pitch(out);
  L.rows = T;
  L.cols = H;
  return L;
}

}  // namespace

void norm_cuda(const Context& ctx, const NormParams& p, const Tensor& x, const Tensor& weight,
               const Tensor& bias, Tensor& out) {
  NormLaunch L = output_launch(p, x, "x", weight, bias, out);
  L.x = x.data();
  L.ldx = pitch(x);
  launch(ctx, x, L);
}

void add_norm_cuda(const Context& ctx, const NormParams& p, Tensor& residual, const Tensor& x,
                   const Tensor& weight, const Tensor& bias, Tensor& out) {
  NormLaunch L = output_launch(p, residual, "residual", weight, bias, out);
  check_rows(x, "x", residual, "residual", L.rows, L.cols);
  L.residual = residual.data();
  L.ldr = pitch(residual);
  L.x = x.data();
  L.ldx = pitch(x);
  launch(ctx, residual, L);
}

}  // namespace fastattn::kernels::cuda

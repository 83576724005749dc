// RMSNorm and LayerNorm on the CPU. Statistics are accumulated in double (vectorised by the
// compiler through `omp simd`); the normalisation itself follows Hugging Face's float32 order of
// operations (x * rsqrt(mean(x^2) + eps), then * weight) so results agree to the last bits.
#include <cmath>
#include <vector>

#include "fastattn/kernels/cpu/cpu_util.h"
#include "fastattn/kernels/cpu/norm_cpu.h"
#include "fastattn/kernels/norm.h"

namespace fastattn::kernels {
namespace {

struct NormWeights {
  const float* w = nullptr;
  const float* b = nullptr;  // LayerNorm bias or null
  std::vector<float> w_store, b_store;
};

// Checks weight / bias against hidden size H and widens them to float32.
NormWeights prepare_weights(const NormParams& p, const Tensor& weight, const Tensor& bias,
                            int64_t H) {
  FA_CHECK(std::isfinite(p.eps) && p.eps >= 0.0f, "norm: eps must be a finite number >= 0, got ",
           p.eps);
  check_cpu(weight, "weight");
  check_floating(weight, "weight");
  check_shape(weight, "weight", {H});
  check_contiguous(weight, "weight");
  NormWeights nw;
  nw.w = cpu::as_float(weight, nw.w_store);
  if (bias.defined()) {
    FA_CHECK(p.type == NormType::kLayerNorm,
             "bias: RMSNorm takes no bias (pass an undefined tensor), got ", bias.describe());
    check_cpu(bias, "bias");
    check_floating(bias, "bias");
    check_shape(bias, "bias", {H});
    check_contiguous(bias, "bias");
    nw.b = cpu::as_float(bias, nw.b_store);
  }
  return nw;
}

void check_activation(const Tensor& t, const char* name) {
  check_cpu(t, name);
  check_dtype(t, name, DType::kFloat32);
  check_dim(t, name, 2);
  check_last_dim_contiguous(t, name);
}

// out[0, H) = norm(in[0, H)); out may equal in.
void norm_row(const NormParams& p, const NormWeights& nw, const float* in, float* out, int64_t H) {
  if (p.type == NormType::kRMSNorm) {
    double ss = 0.0;
#pragma omp simd reduction(+ : ss)
    for (int64_t i = 0; i < H; ++i) ss += static_cast<double>(in[i]) * in[i];
    const float var = static_cast<float>(ss / static_cast<double>(H));
    const float inv = 1.0f / std::sqrt(var + p.eps);
    const float* w = nw.w;
#pragma omp simd
    for (int64_t i = 0; i < H; ++i) out[i] = w[i] * (in[i] * inv);
    return;
  }
  double sum = 0.0;
#pragma omp simd reduction(+ : sum)
  for (int64_t i = 0; i < H; ++i) sum += in[i];
  const double mean_d = sum / static_cast<double>(H);
  double ss = 0.0;
#pragma omp simd reduction(+ : ss)
  for (int64_t i = 0; i < H; ++i) {
    const double d = in[i] - mean_d;
    ss += d * d;
  }
  const float mean = static_cast<float>(mean_d);
  const float rstd = static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(H) + p.eps));
  const float* w = nw.w;
  if (nw.b != nullptr) {
    const float* b = nw.b;
#pragma omp simd
    for (int64_t i = 0; i < H; ++i) out[i] = (in[i] - mean) * rstd * w[i] + b[i];
  } else {
#pragma omp simd
    for (int64_t i = 0; i < H; ++i) out[i] = (in[i] - mean) * rstd * w[i];
  }
}

}  // namespace

void cpu::norm_cpu(const Context& ctx, const NormParams& p, const Tensor& x, const Tensor& weight,
                   const Tensor& bias, Tensor& out) {
  check_activation(x, "x");
  check_activation(out, "out");
  const int64_t T = x.size(0), H = x.size(1);
  check_shape(out, "out", {T, H});
  FA_CHECK(H > 0, "x: hidden size must be positive, got ", x.describe());
  const NormWeights nw = prepare_weights(p, weight, bias, H);
  const float* xp = x.data_as<const float>();
  float* op = out.data_as<float>();
  const int64_t ldx = x.stride(0), ldo = out.stride(0);
  const int threads = cpu::threads_for(ctx, T * H);
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t t = 0; t < T; ++t) norm_row(p, nw, xp + t * ldx, op + t * ldo, H);
}

void cpu::add_norm_cpu(const Context& ctx, const NormParams& p, Tensor& residual, const Tensor& x,
                       const Tensor& weight, const Tensor& bias, Tensor& out) {
  check_activation(residual, "residual");
  check_activation(x, "x");
  check_activation(out, "out");
  const int64_t T = residual.size(0), H = residual.size(1);
  check_shape(x, "x", {T, H});
  check_shape(out, "out", {T, H});
  FA_CHECK(H > 0, "residual: hidden size must be positive, got ", residual.describe());
  const NormWeights nw = prepare_weights(p, weight, bias, H);
  float* rp = residual.data_as<float>();
  const float* xp = x.data_as<const float>();
  float* op = out.data_as<float>();
  const int64_t ldr = residual.stride(0), ldx = x.stride(0), ldo = out.stride(0);
  const int threads = cpu::threads_for(ctx, T * H);
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t t = 0; t < T; ++t) {
    // The row (a few KB) stays in L1 between the add and the norm: one trip to memory.
    float* r = rp + t * ldr;
    const float* xr = xp + t * ldx;
#pragma omp simd
    for (int64_t i = 0; i < H; ++i) r[i] += xr[i];
    norm_row(p, nw, r, op + t * ldo, H);
  }
}

}  // namespace fastattn::kernels

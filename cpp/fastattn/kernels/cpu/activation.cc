// SwiGLU, GeGLU, GELU (erf and tanh forms) and element-wise add on float32 activations (the
// public functions hand CUDA tensors to kernels/cuda/activation_cuda.cc).
//
// The transcendental parts are vectorised with AVX-512 (exp512 from vec_math.h, relative error
// about 2 ulp; SiLU also with AVX2 + FMA, exp256) and fall back to <cmath> elsewhere. Every form is written so it stays accurate in
// relative terms over the whole range:
//   silu(g)       = g * sigmoid(g)
//   gelu_tanh(x)  = 0.5 x (1 + tanh(u)) = x * sigmoid(2u),  u = sqrt(2/pi) (x + 0.044715 x^3)
//   sigmoid(v)    = (v >= 0 ? 1 : e) / (1 + e), e = exp(-|v|)  (exp never overflows)
//   gelu_erf(x)   = x * Phi(x), Phi(x) = 0.5 erfc(-x / sqrt 2), with erfc from the Chebyshev fit in
//                   Numerical Recipes (fractional error < 1.2e-7 everywhere), so the negative tail
//                   keeps its relative accuracy instead of cancelling in 1 + erf(x).
#include <cmath>

#include "fastattn/kernels/activation.h"
#include "fastattn/kernels/cpu/activation_cpu.h"
#include "fastattn/kernels/cpu/cpu_util.h"
#include "fastattn/kernels/cpu/vec_math.h"

namespace fastattn::kernels {
namespace {

constexpr float kSqrt2OverPi = 0.7978845608028654f;
constexpr float kGeluCubic = 0.044715f;
constexpr float kInvSqrt2 = 0.7071067811865476f;

// Scalar forms (tails and non-AVX-512 builds), evaluated in double and rounded once.
inline double sigmoid_d(double v) {
  const double e = std::exp(-std::fabs(v));
  return (v >= 0 ? 1.0 : e) / (1.0 + e);
}
inline float silu_scalar(float g) { return static_cast<float>(g * sigmoid_d(g)); }
inline float gelu_tanh_scalar(float x) {
  const double xd = x;
  const double u =
      static_cast<double>(kSqrt2OverPi) * (xd + static_cast<double>(kGeluCubic) * xd * xd * xd);
  return static_cast<float>(xd * sigmoid_d(2.0 * u));
}
inline float gelu_erf_scalar(float x) {
  return static_cast<float>(0.5 * x * std::erfc(-static_cast<double>(x) * 0.7071067811865476));
}

#if defined(__AVX512F__)
using cpu::exp512;

// sigmoid(v) = 1 / (1 + e^-v) evaluated as (v >= 0 ? 1 : e) / (1 + e), e = exp(-|v|): exp never
// overflows, so the far negative side underflows gracefully instead of dividing by inf.
inline __m512 sigmoid512(__m512 v) {
  const __m512 one = _mm512_set1_ps(1.0f);
  const __m512 e = exp512(_mm512_sub_ps(_mm512_setzero_ps(), _mm512_abs_ps(v)));
  const __mmask16 neg = _mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_LT_OQ);
  return _mm512_div_ps(_mm512_mask_blend_ps(neg, one, e), _mm512_add_ps(one, e));
}

inline __m512 silu512(__m512 g) { return _mm512_mul_ps(g, sigmoid512(g)); }

inline __m512 gelu_tanh512(__m512 x) {
  const __m512 x3 = _mm512_mul_ps(_mm512_mul_ps(x, x), x);
  const __m512 u = _mm512_mul_ps(_mm512_set1_ps(kSqrt2OverPi),
                                 _mm512_fmadd_ps(_mm512_set1_ps(kGeluCubic), x3, x));
  return _mm512_mul_ps(x, sigmoid512(_mm512_add_ps(u, u)));
}

// erfc(z) = t exp(-z^2 + P(t)) with z^2 = x^2 / 2 carried as an exact float pair (hi + lo from
// an FMA): rounding z^2 to float would cost 2 z^2 ulp of relative accuracy in the tail.
inline __m512 gelu_erf512(__m512 x) {
  const __m512 one = _mm512_set1_ps(1.0f), half = _mm512_set1_ps(0.5f);
  const __m512 z = _mm512_mul_ps(_mm512_abs_ps(x), _mm512_set1_ps(kInvSqrt2));
  const __m512 t = _mm512_div_ps(one, _mm512_fmadd_ps(half, z, one));
  __m512 p = _mm512_set1_ps(0.17087277f);
  const float c[] = {-0.82215223f, 1.48851587f, -1.13520398f, 0.27886807f, -0.18628806f,
                     0.09678418f,  0.37409196f, 1.00002368f,  -1.26551223f};
  for (float ci : c) p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(ci));
  const __m512 hi = _mm512_mul_ps(x, x);
  const __m512 lo = _mm512_fmsub_ps(x, x, hi);  // x^2 = hi + lo exactly
  const __m512 a = _mm512_mul_ps(_mm512_set1_ps(-0.5f), hi);
  const __m512 b = _mm512_fnmadd_ps(half, lo, p);  // P(t) - lo / 2
  const __m512 erfc_z = _mm512_mul_ps(t, exp512(a, b));
  const __m512 half_erfc = _mm512_mul_ps(half, erfc_z);
  const __mmask16 neg = _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_LT_OQ);
  const __m512 phi = _mm512_mask_blend_ps(neg, _mm512_sub_ps(one, half_erfc), half_erfc);
  return _mm512_mul_ps(x, phi);
}
#endif

#if !defined(__AVX512F__) && defined(__AVX2__) && defined(__FMA__)
#define FA_SILU_AVX2 1
// silu(g) = g * sigmoid(g), sigmoid as sigmoid512 above, on 8 lanes.
inline __m256 silu256(__m256 g) {
  const __m256 one = _mm256_set1_ps(1.0f);
  const __m256 abs_g = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), g);
  const __m256 e = cpu::exp256(_mm256_sub_ps(_mm256_setzero_ps(), abs_g));
  const __m256 neg = _mm256_cmp_ps(g, _mm256_setzero_ps(), _CMP_LT_OQ);
  return _mm256_mul_ps(g, _mm256_div_ps(_mm256_blendv_ps(one, e, neg), _mm256_add_ps(one, e)));
}
#endif

// The element-wise functions as (scalar, vector) pairs for map_row.
struct GeluTanh {
  static float scalar(float x) { return gelu_tanh_scalar(x); }
#if defined(__AVX512F__)
  static __m512 vec(__m512 x) { return gelu_tanh512(x); }
#endif
};
struct GeluErf {
  static float scalar(float x) { return gelu_erf_scalar(x); }
#if defined(__AVX512F__)
  static __m512 vec(__m512 x) { return gelu_erf512(x); }
#endif
};

// out[i] = Op(in[i]) for n elements (out may equal in).
template <class Op>
inline void map_row(const float* in, float* out, int64_t n) {
  int64_t i = 0;
#if defined(__AVX512F__)
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(out + i, Op::vec(_mm512_loadu_ps(in + i)));
  if (i < n) {
    const __mmask16 m = static_cast<__mmask16>((1u << (n - i)) - 1u);
    _mm512_mask_storeu_ps(out + i, m, Op::vec(_mm512_maskz_loadu_ps(m, in + i)));
    return;
  }
#endif
  for (; i < n; ++i) out[i] = Op::scalar(in[i]);
}

void check_f32(const Tensor& t, const char* name) {
  check_cpu(t, name);
  check_dtype(t, name, DType::kFloat32);
  check_last_dim_contiguous(t, name);
}

// Checks a gated activation's fused [T, 2I] input and [T, I] output; returns I.
int64_t check_gated(const Tensor& gate_up, const Tensor& out) {
  check_f32(gate_up, "gate_up");
  check_f32(out, "out");
  check_dim(gate_up, "gate_up", 2);
  FA_CHECK(gate_up.size(1) % 2 == 0, "gate_up: expected [T, 2 * intermediate], got ",
           gate_up.describe(), " (odd last dimension)");
  const int64_t I = gate_up.size(1) / 2;
  check_shape(out, "out", {gate_up.size(0), I});
  return I;
}

// row(gate, up, out, I) for every token row of a fused [T, 2I] gate_up input and its [T, I]
// output (after check_gated), the rows split over the context's threads.
template <class Row>
void for_each_gated_row(const Context& ctx, const Tensor& gate_up, Tensor& out, Row row) {
  const int64_t T = gate_up.size(0), I = check_gated(gate_up, out);
  const float* gp = gate_up.data_as<const float>();
  float* op = out.data_as<float>();
  const int64_t ldg = gate_up.stride(0), ldo = out.stride(0);
  const int threads = cpu::threads_for(ctx, T * I);
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t t = 0; t < T; ++t) {
    const float* g = gp + t * ldg;
    row(g, g + I, op + t * ldo, I);
  }
}

}  // namespace

void cpu::swiglu_cpu(const Context& ctx, const Tensor& gate_up, Tensor& out) {
  for_each_gated_row(ctx, gate_up, out, [](const float* g, const float* u, float* o, int64_t I) {
    int64_t i = 0;
#if defined(__AVX512F__)
    for (; i + 16 <= I; i += 16)
      _mm512_storeu_ps(o + i,
                       _mm512_mul_ps(silu512(_mm512_loadu_ps(g + i)), _mm512_loadu_ps(u + i)));
#elif defined(FA_SILU_AVX2)
    for (; i + 8 <= I; i += 8)
      _mm256_storeu_ps(o + i, _mm256_mul_ps(silu256(_mm256_loadu_ps(g + i)), _mm256_loadu_ps(u + i)));
#endif
    for (; i < I; ++i) o[i] = silu_scalar(g[i]) * u[i];
  });
}

void cpu::geglu_cpu(const Context& ctx, const Tensor& gate_up, Tensor& out, GeluApprox approx) {
  for_each_gated_row(ctx, gate_up, out,
                     [approx](const float* g, const float* u, float* o, int64_t I) {
                       // gelu(gate) into the output row (L1-resident), then the product with up.
                       if (approx == GeluApprox::kTanh)
                         map_row<GeluTanh>(g, o, I);
                       else
                         map_row<GeluErf>(g, o, I);
#pragma omp simd
                       for (int64_t i = 0; i < I; ++i) o[i] *= u[i];
                     });
}

void cpu::gelu_cpu(const Context& ctx, const Tensor& x, Tensor& out, GeluApprox approx) {
  check_f32(x, "x");
  check_f32(out, "out");
  check_shape(out, "out", x.shape());
  const cpu::RowIndex xr(x), orow(out);
  const int64_t rows = xr.rows(), n = xr.cols();
  const float* xp = x.data_as<const float>();
  float* op = out.data_as<float>();
  const int threads = cpu::threads_for(ctx, rows * n);
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const float* in = xp + xr.row_offset(r);
    float* o = op + orow.row_offset(r);
    if (approx == GeluApprox::kTanh)
      map_row<GeluTanh>(in, o, n);
    else
      map_row<GeluErf>(in, o, n);
  }
}

void cpu::add_cpu(const Context& ctx, const Tensor& a, const Tensor& b, Tensor& out) {
  check_f32(a, "a");
  check_f32(b, "b");
  check_f32(out, "out");
  check_shape(b, "b", a.shape());
  check_shape(out, "out", a.shape());
  const cpu::RowIndex ar(a), br(b), orow(out);
  const int64_t rows = ar.rows(), n = ar.cols();
  const float* ap = a.data_as<const float>();
  const float* bp = b.data_as<const float>();
  float* op = out.data_as<float>();
  const int threads = cpu::threads_for(ctx, rows * n);
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const float* x = ap + ar.row_offset(r);
    const float* y = bp + br.row_offset(r);
    float* o = op + orow.row_offset(r);
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) o[i] = x[i] + y[i];
  }
}

}  // namespace fastattn::kernels

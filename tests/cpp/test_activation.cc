// SwiGLU, GELU (erf, tanh) and add against float64 references over the whole input range.
#include <cmath>
#include <string>
#include <vector>

#include "fastattn/core/context.h"
#include "fastattn/kernels/activation.h"
#include "kernel_test_util.h"
#include "test_util.h"

using namespace fastattn;
using namespace fastattn::kernels;

namespace {

// Inputs: normal samples at several scales plus the ends of the range.
std::vector<float> inputs(size_t n, uint32_t seed) {
  std::vector<float> v = fa_test::randn(n, seed, 3.0f);
  const float special[] = {0.0f,  -0.0f,  1e-20f, -1e-20f, 10.0f, -10.0f, 30.0f, -30.0f,
                           87.0f, -87.0f, 100.0f, -100.0f, 1e4f,  -1e4f,  0.5f,  -0.5f};
  for (size_t i = 0; i < n && i < 16; ++i) v[i * 7 % n] = special[i];
  return v;
}

double silu_ref(double g) { return g / (1.0 + std::exp(-g)); }
double gelu_erf_ref(double x) { return 0.5 * x * std::erfc(-x / std::sqrt(2.0)); }
double tanh_inner(double x) {
  return std::sqrt(2.0 / 3.141592653589793) * (x + 0.044715 * x * x * x);
}
// 0.5 x (1 + tanh(u)) written as x / (1 + exp(-2u)): the same function without the cancellation
// of 1 + tanh(u) for u << 0.
double gelu_tanh_ref(double x) { return x / (1.0 + std::exp(-2.0 * tanh_inner(x))); }

// Relative tolerance of tanh-GELU: float32 rounding of u (a few ulp) is amplified by the
// function's own conditioning, |d log f / du| <= 2, hence the |u| term in the tail.
double gelu_tolerance(GeluApprox approx, double x) {
  return approx == GeluApprox::kErf ? 2e-6 : 2e-6 + 1e-6 * std::fabs(tanh_inner(x));
}

// Relative error budget of a float32 implementation: a few ulp of the result (1e-6), plus an
// absolute floor of the smallest normal float (below it float32 has no relative precision).
constexpr double kFloatMin = 1.1754943508222875e-38;
bool close(double got, double ref, double rel = 2e-6) {
  return std::fabs(got - ref) <= rel * std::fabs(ref) + kFloatMin;
}

}  // namespace

TEST(swiglu_matches_float64) {
  uint32_t seed = 1;
  for (int64_t T : {1, 3, 17})
    for (int64_t I : {1, 15, 16, 100, 2048})
      for (int64_t pad : {0, 5}) {
        const int64_t ldg = 2 * I + pad, ldo = I + pad;
        std::vector<float> gu(T * ldg);
        const auto g = inputs(T * I, seed), u = fa_test::randn(T * I, seed + 1);
        for (int64_t t = 0; t < T; ++t)
          for (int64_t i = 0; i < I; ++i) {
            gu[t * ldg + i] = g[t * I + i];
            gu[t * ldg + I + i] = u[t * I + i];
          }
        std::vector<float> out(T * ldo, fa_test::kPoison);
        Tensor gt(gu.data(), DType::kFloat32, {T, 2 * I}, {ldg, 1});
        Tensor ot(out.data(), DType::kFloat32, {T, I}, {ldo, 1});
        swiglu(cpu_context(1 + seed % 2), gt, ot);
        int bad = 0;
        for (int64_t t = 0; t < T; ++t) {
          for (int64_t i = 0; i < I; ++i)
            if (!close(out[t * ldo + i], silu_ref(g[t * I + i]) * u[t * I + i], 3e-6)) ++bad;
          for (int64_t i = I; i < ldo; ++i) CHECK(std::isnan(out[t * ldo + i]));
        }
        CHECK_MSG(bad == 0, "T=" + std::to_string(T) + " I=" + std::to_string(I) + ": " +
                                std::to_string(bad) + " bad");
        ++seed;
      }
}

TEST(swiglu_dense_sweep) {
  // gate over [-110, 110] in steps of 1/64 (through the vector path's exp clamps at -104 and 89
  // and the denormal range of the result), up = +-1 and 1e30 (products near overflow).
  const int64_t I = 110 * 2 * 64 + 1;
  for (float up : {1.0f, -1.0f, 1e30f}) {
    std::vector<float> gu(static_cast<size_t>(2 * I)),
        out(static_cast<size_t>(I), fa_test::kPoison);
    for (int64_t i = 0; i < I; ++i) {
      gu[i] = -110.0f + static_cast<float>(i) / 64.0f;
      gu[I + i] = up;
    }
    Tensor gt(gu.data(), DType::kFloat32, {1, 2 * I});
    Tensor ot(out.data(), DType::kFloat32, {1, I});
    swiglu(cpu_context(1), gt, ot);
    int bad = 0;
    double worst = 0;
    // silu(gate) is a float32 before the product, so its absolute floor scales with |up|.
    const double floor = kFloatMin * std::fabs(up);
    for (int64_t i = 0; i < I; ++i) {
      const double ref = silu_ref(gu[i]) * up;
      const double err = std::fabs(out[i] - ref), tol = 3e-6 * std::fabs(ref) + floor;
      if (!(err <= tol)) ++bad;
      worst = std::fmax(worst, err / tol);
    }
    CHECK_MSG(bad == 0, "up=" + std::to_string(up) + ": " + std::to_string(bad) +
                            " bad, worst error / tolerance " + std::to_string(worst));
  }
}

TEST(gelu_matches_float64) {
  for (GeluApprox approx : {GeluApprox::kErf, GeluApprox::kTanh}) {
    for (int64_t n : {1, 5, 16, 33, 3072}) {
      const auto x = inputs(3 * n, static_cast<uint32_t>(n));
      std::vector<float> out(3 * n, fa_test::kPoison);
      Tensor xt(const_cast<float*>(x.data()), DType::kFloat32, {3, n});
      Tensor ot(out.data(), DType::kFloat32, {3, n});
      gelu(cpu_context(), xt, ot, approx);
      int bad = 0;
      for (int64_t i = 0; i < 3 * n; ++i) {
        const double ref = approx == GeluApprox::kErf ? gelu_erf_ref(x[i]) : gelu_tanh_ref(x[i]);
        if (!close(out[i], ref, gelu_tolerance(approx, x[i]))) {
          if (bad < 3) std::fprintf(stderr, "    gelu(%g) = %.9g, ref %.9g\n", x[i], out[i], ref);
          ++bad;
        }
      }
      CHECK_MSG(bad == 0, std::string(approx == GeluApprox::kErf ? "erf" : "tanh") +
                              " n=" + std::to_string(n) + ": " + std::to_string(bad) + " bad");
    }
  }
}

TEST(gelu_dense_sweep) {
  // Every 1/64 over [-12, 12]: where erf / tanh forms are hardest (the transition and the tails).
  std::vector<float> x;
  for (int i = -768; i <= 768; ++i) x.push_back(i / 64.0f);
  const int64_t n = static_cast<int64_t>(x.size());
  for (GeluApprox approx : {GeluApprox::kErf, GeluApprox::kTanh}) {
    std::vector<float> out(x.size(), fa_test::kPoison);
    Tensor xt(x.data(), DType::kFloat32, {n});
    Tensor ot(out.data(), DType::kFloat32, {n});
    gelu(cpu_context(), xt, ot, approx);
    double worst = 0;  // error / tolerance
    for (int64_t i = 0; i < n; ++i) {
      const double ref = approx == GeluApprox::kErf ? gelu_erf_ref(x[i]) : gelu_tanh_ref(x[i]);
      const double ratio =
          std::fabs(out[i] - ref) / (std::fabs(ref) * gelu_tolerance(approx, x[i]) + kFloatMin);
      if (ratio > 1.0 && ratio > worst)
        std::fprintf(stderr, "    %s gelu(%g) = %.9g, ref %.9g\n",
                     approx == GeluApprox::kErf ? "erf" : "tanh", x[i], out[i], ref);
      worst = std::fmax(worst, ratio);
    }
    CHECK_MSG(worst <= 1.0, "worst error / tolerance " + std::to_string(worst));
  }
}

TEST(gelu_in_place_and_strided) {
  // A 3-D view with padded rows, computed in place.
  const int64_t A = 2, B = 3, C = 40, ld = 48;
  std::vector<float> buf = fa_test::randn(A * B * ld, 9, 2.0f);
  const std::vector<float> before = buf;
  Tensor t(buf.data(), DType::kFloat32, {A, B, C}, {B * ld, ld, 1});
  gelu(cpu_context(), t, t, GeluApprox::kTanh);
  for (int64_t r = 0; r < A * B; ++r)
    for (int64_t i = 0; i < ld; ++i) {
      const size_t k = r * ld + i;
      if (i < C)
        CHECK(
            close(buf[k], gelu_tanh_ref(before[k]), gelu_tolerance(GeluApprox::kTanh, before[k])));
      else
        CHECK(buf[k] == before[k]);
    }
}

TEST(add_is_exact) {
  for (int64_t n : {1, 7, 768, 40000}) {
    const auto a = fa_test::randn(n, 1), b = fa_test::randn(n, 2);
    std::vector<float> out(n, fa_test::kPoison);
    Tensor ot(out.data(), DType::kFloat32, {n});
    add(cpu_context(2), Tensor(const_cast<float*>(a.data()), DType::kFloat32, {n}),
        Tensor(const_cast<float*>(b.data()), DType::kFloat32, {n}), ot);
    for (int64_t i = 0; i < n; ++i) CHECK(out[i] == a[i] + b[i]);
  }
  // Strided 2-D, out aliasing a.
  std::vector<float> a = fa_test::randn(4 * 10, 3), b = fa_test::randn(4 * 6, 4);
  const std::vector<float> a0 = a;
  Tensor at(a.data(), DType::kFloat32, {4, 6}, {10, 1});
  Tensor bt(b.data(), DType::kFloat32, {4, 6});
  add(cpu_context(), at, bt, at);
  for (int r = 0; r < 4; ++r)
    for (int i = 0; i < 10; ++i)
      CHECK(a[r * 10 + i] == (i < 6 ? a0[r * 10 + i] + b[r * 6 + i] : a0[r * 10 + i]));
}

TEST(activation_bad_arguments) {
  std::vector<float> x(4 * 8, 1.0f), out(4 * 8);
  const Context ctx = cpu_context();
  Tensor gu(x.data(), DType::kFloat32, {4, 8});
  Tensor o4(out.data(), DType::kFloat32, {4, 4});
  swiglu(ctx, gu, o4);
  Tensor o5(out.data(), DType::kFloat32, {4, 5});
  CHECK_THROWS(swiglu(ctx, gu, o5), InvalidArgument, "out: expected shape [4, 4]");
  Tensor odd(x.data(), DType::kFloat32, {4, 7});
  CHECK_THROWS(swiglu(ctx, odd, o4), InvalidArgument, "gate_up: expected [T, 2 * intermediate]");
  Tensor xh(x.data(), DType::kFloat16, {4, 8});
  CHECK_THROWS(swiglu(ctx, xh, o4), InvalidArgument, "gate_up: expected dtype float32");
  Tensor o8(out.data(), DType::kFloat32, {4, 8});
  CHECK_THROWS(gelu(ctx, gu, o4), InvalidArgument, "out: expected shape [4, 8]");
  CHECK_THROWS(gelu(ctx, fa_test::on_cuda(gu), o8), InvalidArgument, "x: expected a CPU tensor");
  CHECK_THROWS(add(ctx, gu, o4, o8), InvalidArgument, "b: expected shape [4, 8]");
  Tensor col(x.data(), DType::kFloat32, {4, 8}, {1, 4});
  CHECK_THROWS(add(ctx, col, gu, o8), InvalidArgument, "a: the last dimension must be contiguous");
}

TEST_MAIN()

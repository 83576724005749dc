// linear(): every weight dtype, both regimes (GEMV for small M, BLAS for large M; the switch is at
// M = 24 for fp32 and 32 for 16-bit weights), odd shapes,
// strided x and y, with and without bias, against a float64 reference; bad arguments.
#include <cmath>
#include <string>
#include <vector>

#include "fastattn/core/context.h"
#include "fastattn/kernels/gemm.h"
#include "kernel_test_util.h"
#include "test_util.h"

using namespace fastattn;
using fa_test::FloatData;

namespace {

struct Case {
  int64_t M, N, K;
  DType w_type;
  bool bias;
  int64_t x_pad;  // extra floats between x rows (0 = contiguous)
  int64_t y_pad;  // extra floats between y rows
  int threads;
};

// Runs one case; checks every output against float64 and every y padding element is untouched.
void run_case(const Case& c, uint32_t seed) {
  const int64_t ldx = c.K + c.x_pad, ldy = c.N + c.y_pad;
  std::vector<float> xs(static_cast<size_t>(c.M * ldx), fa_test::kPoison);  // padding stays NaN
  const std::vector<float> xv = fa_test::randn(static_cast<size_t>(c.M * c.K), seed);
  for (int64_t m = 0; m < c.M; ++m)
    for (int64_t k = 0; k < c.K; ++k) xs[m * ldx + k] = xv[m * c.K + k];
  FloatData w = fa_test::make_float_data(c.w_type, static_cast<size_t>(c.N * c.K), seed + 1);
  FloatData b = fa_test::make_float_data(c.w_type, static_cast<size_t>(c.N), seed + 2);
  std::vector<float> ys(static_cast<size_t>(c.M * ldy), fa_test::kPoison);
  const float sentinel = -12345.0f;
  for (int64_t m = 0; m < c.M; ++m)
    for (int64_t n = c.N; n < ldy; ++n) ys[m * ldy + n] = sentinel;

  Tensor x(xs.data(), DType::kFloat32, {c.M, c.K}, {ldx, 1});
  Tensor wt(w.data(), c.w_type, {c.N, c.K});
  Tensor bt = c.bias ? Tensor(b.data(), c.w_type, {c.N}) : Tensor();
  Tensor y(ys.data(), DType::kFloat32, {c.M, c.N}, {ldy, 1});
  kernels::linear(cpu_context(c.threads), x, wt, bt, y);

  // Error bound of fp32 accumulation: K * 2^-24 * sum |x w| (plus the bias add).
  double worst_ratio = 0;
  int bad = 0;
  for (int64_t m = 0; m < c.M; ++m) {
    for (int64_t n = 0; n < c.N; ++n) {
      double ref = c.bias ? b.values[n] : 0.0, mag = std::fabs(ref);
      for (int64_t k = 0; k < c.K; ++k) {
        const double p = static_cast<double>(xv[m * c.K + k]) * w.values[n * c.K + k];
        ref += p;
        mag += std::fabs(p);
      }
      const double tol = (c.K + 2) * std::ldexp(1.0, -24) * mag + 1e-30;
      const double err = std::fabs(ys[m * ldy + n] - ref);
      if (!(err <= tol)) ++bad;  // NaN (unwritten) counts as bad
      worst_ratio = std::fmax(worst_ratio, err / tol);
    }
    for (int64_t n = c.N; n < ldy; ++n) CHECK(ys[m * ldy + n] == sentinel);
  }
  CHECK_MSG(bad == 0, "M=" + std::to_string(c.M) + " N=" + std::to_string(c.N) +
                          " K=" + std::to_string(c.K) + " w=" + dtype_name(c.w_type) +
                          " bias=" + std::to_string(c.bias) + ": " + std::to_string(bad) +
                          " outputs outside the fp32 bound (worst err/bound " +
                          std::to_string(worst_ratio) + ")");
}

}  // namespace

TEST(linear_all_dtypes_shapes_and_strides) {
  uint32_t seed = 100;
  for (DType dt : fa_test::kFloatTypes) {
    for (int64_t M : {1, 3, 6, 17, 64}) {
      for (auto nk : {std::pair<int64_t, int64_t>{37, 129}, {129, 37}, {64, 768}, {5, 16}}) {
        for (bool bias : {false, true}) {
          const bool strided = (seed % 2) == 0;
          run_case({M, nk.first, nk.second, dt, bias, strided ? 7 : 0, strided ? 3 : 0,
                    static_cast<int>(1 + seed % 2)},
                   seed);
          ++seed;
        }
      }
    }
  }
}

TEST(linear_large_enough_to_thread) {
  // Big enough that both the GEMV and the panel-converting BLAS path use several threads and
  // (for 16-bit weights) more than one panel.
  for (DType dt : fa_test::kFloatTypes) {
    run_case({1, 1031, 520, dt, true, 0, 0, 2}, 7);
    run_case({4, 300, 2048, dt, false, 5, 0, 2}, 8);
    run_case({24, 1100, 520, dt, true, 0, 2, 2}, 9);
    run_case({30, 333, 100, dt, false, 1, 0, 2}, 10);  // GEMV for 16-bit, BLAS for fp32
    run_case({40, 1025, 64, dt, true, 0, 0, 2}, 11);   // BLAS for every dtype
  }
  // A prefill-sized x (M >= 128) widens 16-bit weights in 8 MiB panels: 128 rows of K = 16384,
  // so N = 150 on one thread takes a full panel and a partial one.
  for (DType dt : fa_test::kFloatTypes) run_case({128, 150, 16384, dt, false, 3, 1, 1}, 12);
}

TEST(linear_small_m_equals_large_m_path) {
  // The same rows computed as M=1 (GEMV) and inside M=48 (BLAS) agree to fp32 rounding.
  const int64_t N = 96, K = 200;
  for (DType dt : fa_test::kFloatTypes) {
    std::vector<float> xs = fa_test::randn(48 * K, 3);
    FloatData w = fa_test::make_float_data(dt, N * K, 4);
    std::vector<float> big(48 * N, fa_test::kPoison), one(N, fa_test::kPoison);
    Tensor wt(w.data(), dt, {N, K});
    Tensor yb(big.data(), DType::kFloat32, {48, N});
    kernels::linear(cpu_context(), Tensor(xs.data(), DType::kFloat32, {48, K}), wt, Tensor(), yb);
    Tensor y1(one.data(), DType::kFloat32, {1, N});
    kernels::linear(cpu_context(), Tensor(xs.data() + 5 * K, DType::kFloat32, {1, K}), wt, Tensor(),
                    y1);
    for (int64_t n = 0; n < N; ++n)
      CHECK_NEAR(one[n], big[5 * N + n], 1e-4 * (1 + std::fabs(one[n])));
  }
}

TEST(linear_zero_k_gives_bias) {
  std::vector<float> b = {1.5f, -2.0f, 3.0f}, ys(6, fa_test::kPoison);
  float xdummy = 0;
  Tensor x(&xdummy, DType::kFloat32, {2, 0});
  float wdummy = 0;
  Tensor w(&wdummy, DType::kFloat32, {3, 0});
  Tensor y(ys.data(), DType::kFloat32, {2, 3});
  kernels::linear(cpu_context(), x, w, Tensor(b.data(), DType::kFloat32, {3}), y);
  for (int i = 0; i < 6; ++i) CHECK(ys[i] == b[i % 3]);
}

TEST(linear_bad_arguments) {
  std::vector<float> xs(2 * 8, 1.0f), ws(4 * 8, 1.0f), bs(4, 0.0f), ys(2 * 4);
  const Context ctx = cpu_context();
  Tensor x(xs.data(), DType::kFloat32, {2, 8});
  Tensor w(ws.data(), DType::kFloat32, {4, 8});
  Tensor b(bs.data(), DType::kFloat32, {4});
  Tensor y(ys.data(), DType::kFloat32, {2, 4});
  kernels::linear(ctx, x, w, b, y);  // the good call works

  Tensor w_bad(ws.data(), DType::kFloat32, {4, 7});
  CHECK_THROWS(kernels::linear(ctx, x, w_bad, b, y), InvalidArgument, "w: expected [N, 8]");
  Tensor b_bad(bs.data(), DType::kFloat32, {3});
  CHECK_THROWS(kernels::linear(ctx, x, w, b_bad, y), InvalidArgument, "bias: expected shape [4]");
  Tensor y_bad(ys.data(), DType::kFloat32, {2, 3});
  CHECK_THROWS(kernels::linear(ctx, x, w, b, y_bad), InvalidArgument, "y: expected shape [2, 4]");
  Tensor x_int(xs.data(), DType::kInt32, {2, 8});
  CHECK_THROWS(kernels::linear(ctx, x_int, w, b, y), InvalidArgument, "x: expected dtype float32");
  Tensor x_1d(xs.data(), DType::kFloat32, {16});
  CHECK_THROWS(kernels::linear(ctx, x_1d, w, b, y), InvalidArgument, "x: expected 2 dimensions");
  Tensor x_col(xs.data(), DType::kFloat32, {2, 8}, {1, 2});
  CHECK_THROWS(kernels::linear(ctx, x_col, w, b, y), InvalidArgument, "x: the last dimension");
  Tensor w_t(ws.data(), DType::kFloat32, {4, 8}, {1, 4});
  CHECK_THROWS(kernels::linear(ctx, x, w_t, b, y), InvalidArgument, "w: expected a contiguous");
  Tensor w_int(ws.data(), DType::kInt32, {4, 8});
  CHECK_THROWS(kernels::linear(ctx, x, w_int, b, y), InvalidArgument, "w: expected a float32");
  Tensor y_half(ys.data(), DType::kFloat16, {2, 4});
  CHECK_THROWS(kernels::linear(ctx, x, w, b, y_half), InvalidArgument, "y: expected dtype float32");
  Tensor x_overlap(xs.data(), DType::kFloat32, {2, 8}, {4, 1});
  CHECK_THROWS(kernels::linear(ctx, x_overlap, w, b, y), InvalidArgument, "x: row stride 4");
  Tensor y_alias(xs.data(), DType::kFloat32, {2, 4});
  CHECK_THROWS(kernels::linear(ctx, x, w, b, y_alias), InvalidArgument, "y: must not overlap x");
  CHECK_THROWS(kernels::linear(ctx, fa_test::on_cuda(x), w, b, y), InvalidArgument,
               "x: expected a CPU tensor");
  CHECK_THROWS(kernels::linear(ctx, x, fa_test::on_cuda(w), b, y), InvalidArgument,
               "w: expected a CPU tensor");
  CHECK_THROWS(kernels::linear(ctx, x, w, fa_test::on_cuda(b), y), InvalidArgument,
               "bias: expected a CPU tensor");
  Tensor y_cuda = fa_test::on_cuda(y);
  CHECK_THROWS(kernels::linear(ctx, x, w, b, y_cuda), InvalidArgument, "y: expected a CPU tensor");
}

TEST(gemm_f32_matches_reference) {
  // The BLAS wrapper itself, with transposes and leading dimensions.
  const int64_t m = 5, n = 7, k = 9;
  std::vector<float> a = fa_test::randn(k * m, 11), b = fa_test::randn(n * k, 12);
  std::vector<float> c(m * n, 0.5f);
  kernels::gemm_f32(true, true, m, n, k, 2.0f, a.data(), m, b.data(), k, 0.5f, c.data(), n);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double ref = 0.25;
      for (int64_t p = 0; p < k; ++p) ref += 2.0 * a[p * m + i] * b[j * k + p];
      CHECK_NEAR(c[i * n + j], ref, 1e-4);
    }
  CHECK(std::string(kernels::blas_name()).size() > 0);
}

TEST_MAIN()

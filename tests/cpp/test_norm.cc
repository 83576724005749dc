// RMSNorm / LayerNorm and the fused residual add + norm against float64 references.
#include <cmath>
#include <string>
#include <vector>

#include "fastattn/core/context.h"
#include "fastattn/kernels/norm.h"
#include "kernel_test_util.h"
#include "test_util.h"

using namespace fastattn;
using namespace fastattn::kernels;
using fa_test::FloatData;

namespace {

constexpr double kUlp = 1.0 / (1 << 24);

struct RefRow {
  std::vector<double> out;
  std::vector<double> scale;  // per-element magnitude that sets the fp32 error
};

// float64 norm of one row (x already the exact float inputs).
RefRow ref_norm(NormType type, float eps, const float* x, int64_t H, const std::vector<float>& w,
                const std::vector<float>* b) {
  RefRow r;
  r.out.resize(H);
  r.scale.resize(H);
  double mean = 0;
  if (type == NormType::kLayerNorm) {
    for (int64_t i = 0; i < H; ++i) mean += x[i];
    mean /= H;
  }
  double ss = 0;
  for (int64_t i = 0; i < H; ++i) ss += (x[i] - mean) * (x[i] - mean);
  const double inv = 1.0 / std::sqrt(ss / H + eps);
  for (int64_t i = 0; i < H; ++i) {
    r.out[i] = (x[i] - mean) * inv * w[i] + (b ? (*b)[i] : 0.0);
    r.scale[i] = (std::fabs(x[i]) + std::fabs(mean)) * inv * std::fabs(w[i]) +
                 (b ? std::fabs((*b)[i]) : 0.0);
  }
  return r;
}

struct NormCase {
  NormType type;
  DType w_type;
  bool bias;
  int64_t T, H;
  int64_t pad;  // extra floats between rows of x / out
  bool fused;   // add_norm instead of norm
  bool in_place;
  int threads;
};

void run_case(const NormCase& c, uint32_t seed) {
  const NormParams p{c.type, 1e-5f};
  const int64_t ld = c.H + c.pad;
  std::vector<float> x(c.T * ld, fa_test::kPoison), res(c.T * ld, fa_test::kPoison);
  std::vector<float> out(c.T * ld, fa_test::kPoison);
  const auto xv = fa_test::randn(c.T * c.H, seed, 2.0f), rv = fa_test::randn(c.T * c.H, seed + 1);
  for (int64_t t = 0; t < c.T; ++t)
    for (int64_t i = 0; i < c.H; ++i) {
      x[t * ld + i] = xv[t * c.H + i] + 0.5f;  // a non-zero mean for LayerNorm
      res[t * ld + i] = rv[t * c.H + i];
    }
  FloatData w = fa_test::make_float_data(c.w_type, c.H, seed + 2);
  FloatData b = fa_test::make_float_data(c.w_type, c.H, seed + 3);
  Tensor xt(x.data(), DType::kFloat32, {c.T, c.H}, {ld, 1});
  Tensor rt(res.data(), DType::kFloat32, {c.T, c.H}, {ld, 1});
  Tensor ot = c.in_place ? xt : Tensor(out.data(), DType::kFloat32, {c.T, c.H}, {ld, 1});
  Tensor wt(w.data(), c.w_type, {c.H});
  Tensor bt = c.bias ? Tensor(b.data(), c.w_type, {c.H}) : Tensor();
  const std::vector<float> x_before = x, res_before = res;

  if (c.fused)
    kernels::add_norm(cpu_context(c.threads), p, rt, xt, wt, bt, ot);
  else
    kernels::norm(cpu_context(c.threads), p, xt, wt, bt, ot);

  const float* result = c.in_place ? x.data() : out.data();
  int bad = 0;
  double worst = 0;
  for (int64_t t = 0; t < c.T; ++t) {
    std::vector<float> row(c.H);
    for (int64_t i = 0; i < c.H; ++i) {
      if (c.fused) {
        const float sum = res_before[t * ld + i] + x_before[t * ld + i];
        if (!(res[t * ld + i] == sum)) ++bad;  // residual += x, exactly in float32
        row[i] = sum;
      } else {
        row[i] = x_before[t * ld + i];
      }
    }
    const RefRow ref =
        ref_norm(c.type, p.eps, row.data(), c.H, w.values, c.bias ? &b.values : nullptr);
    for (int64_t i = 0; i < c.H; ++i) {
      const double err = std::fabs(result[t * ld + i] - ref.out[i]);
      const double tol = 8 * kUlp * ref.scale[i] + 1e-30;
      if (!(err <= tol)) ++bad;
      worst = std::fmax(worst, err / tol);
    }
    for (int64_t i = c.H; i < ld; ++i) CHECK(std::isnan(result[t * ld + i]));  // padding untouched
  }
  CHECK_MSG(bad == 0, std::string(c.type == NormType::kRMSNorm ? "rms" : "layer") +
                          " w=" + dtype_name(c.w_type) + " T=" + std::to_string(c.T) +
                          " H=" + std::to_string(c.H) + (c.fused ? " fused" : "") + ": " +
                          std::to_string(bad) + " bad elements, worst err/tol " +
                          std::to_string(worst));
}

}  // namespace

TEST(norm_matches_float64) {
  uint32_t seed = 1;
  for (NormType type : {NormType::kRMSNorm, NormType::kLayerNorm})
    for (DType dt : fa_test::kFloatTypes)
      for (auto th : {std::pair<int64_t, int64_t>{1, 768}, {5, 7}, {37, 64}, {3, 1000}}) {
        const bool bias = type == NormType::kLayerNorm && (seed % 2 == 0);
        run_case({type, dt, bias, th.first, th.second, seed % 3 == 0 ? 5 : 0, false, false, 1},
                 seed);
        ++seed;
      }
}

TEST(add_norm_matches_float64) {
  uint32_t seed = 50;
  for (NormType type : {NormType::kRMSNorm, NormType::kLayerNorm})
    for (DType dt : fa_test::kFloatTypes)
      for (auto th : {std::pair<int64_t, int64_t>{1, 768}, {6, 33}, {17, 128}}) {
        run_case({type, dt, type == NormType::kLayerNorm, th.first, th.second, seed % 2 ? 3 : 0,
                  true, false, 2},
                 seed);
        ++seed;
      }
}

TEST(norm_in_place_and_threaded) {
  // Enough rows to split across threads; out aliasing x.
  run_case({NormType::kRMSNorm, DType::kFloat32, false, 64, 768, 0, false, true, 2}, 7);
  run_case({NormType::kLayerNorm, DType::kBFloat16, true, 64, 768, 4, false, true, 2}, 8);
  run_case({NormType::kRMSNorm, DType::kFloat16, false, 64, 768, 0, true, true, 2}, 9);
}

TEST(norm_bad_arguments) {
  std::vector<float> x(4 * 8, 1.0f), w(8, 1.0f), out(4 * 8);
  const Context ctx = cpu_context();
  Tensor xt(x.data(), DType::kFloat32, {4, 8});
  Tensor wt(w.data(), DType::kFloat32, {8});
  Tensor ot(out.data(), DType::kFloat32, {4, 8});
  NormParams rms;
  kernels::norm(ctx, rms, xt, wt, Tensor(), ot);  // the good call works
  Tensor w_bad(w.data(), DType::kFloat32, {7});
  CHECK_THROWS(kernels::norm(ctx, rms, xt, w_bad, Tensor(), ot), InvalidArgument,
               "weight: expected shape [8]");
  CHECK_THROWS(kernels::norm(ctx, rms, xt, wt, wt, ot), InvalidArgument,
               "bias: RMSNorm takes no bias");
  NormParams ln{NormType::kLayerNorm, 1e-5f};
  CHECK_THROWS(kernels::norm(ctx, ln, xt, wt, w_bad, ot), InvalidArgument,
               "bias: expected shape [8]");
  Tensor o_bad(out.data(), DType::kFloat32, {4, 7});
  CHECK_THROWS(kernels::norm(ctx, rms, xt, wt, Tensor(), o_bad), InvalidArgument,
               "out: expected shape [4, 8]");
  Tensor x_half(x.data(), DType::kFloat16, {4, 8});
  CHECK_THROWS(kernels::norm(ctx, rms, x_half, wt, Tensor(), ot), InvalidArgument,
               "x: expected dtype float32");
  NormParams neg{NormType::kRMSNorm, -1.0f};
  CHECK_THROWS(kernels::norm(ctx, neg, xt, wt, Tensor(), ot), InvalidArgument, "eps");
  CHECK_THROWS(kernels::norm(ctx, rms, fa_test::on_cuda(xt), wt, Tensor(), ot), InvalidArgument,
               "x: expected a CPU tensor");
  CHECK_THROWS(kernels::norm(ctx, rms, xt, fa_test::on_cuda(wt), Tensor(), ot), InvalidArgument,
               "weight: expected a CPU tensor");
  Tensor x_small(x.data(), DType::kFloat32, {3, 8});
  CHECK_THROWS(kernels::add_norm(ctx, rms, xt, x_small, wt, Tensor(), ot), InvalidArgument,
               "x: expected shape [4, 8]");
  Tensor r_cuda = fa_test::on_cuda(xt);
  CHECK_THROWS(kernels::add_norm(ctx, rms, r_cuda, xt, wt, Tensor(), ot), InvalidArgument,
               "residual: expected a CPU tensor");
}

TEST_MAIN()

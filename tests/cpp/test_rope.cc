// Rotary embedding: inverse frequencies of every scaling type against their float64 formulas,
// and the rotation itself (both styles, partial rotary, strided views, int32/int64 positions)
// against a float64 reference.
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "fastattn/core/context.h"
#include "fastattn/kernels/rope.h"
#include "kernel_test_util.h"
#include "test_util.h"

using namespace fastattn;
using namespace fastattn::kernels;

namespace {

constexpr double kUlp = 1.0 / (1 << 24);
constexpr double kPi = 3.141592653589793;

// The formulas of transformers' modeling_rope_utils.py, in float64.
std::vector<double> ref_inv_freq(const RopeParams& p, int dim, int64_t seq_len) {
  double base = p.theta;
  if (p.scaling == RopeScaling::kDynamicNTK && seq_len > p.original_max_position) {
    const double f = p.factor;
    base *= std::pow(f * seq_len / p.original_max_position - (f - 1), double(dim) / (dim - 2));
  }
  std::vector<double> inv(dim / 2);
  for (int i = 0; i < dim / 2; ++i) {
    double v = 1.0 / std::pow(base, double(2 * i) / dim);
    if (p.scaling == RopeScaling::kLinear) v /= p.factor;
    if (p.scaling == RopeScaling::kLlama3) {
      const double low_wl = double(p.original_max_position) / p.low_freq_factor;
      const double high_wl = double(p.original_max_position) / p.high_freq_factor;
      const double wl = 2 * kPi / v;
      if (wl > low_wl) {
        v /= p.factor;
      } else if (wl >= high_wl) {
        const double s = (p.original_max_position / wl - p.low_freq_factor) /
                         (p.high_freq_factor - p.low_freq_factor);
        v = (1 - s) * v / p.factor + s * v;
      }
    }
    inv[i] = v;
  }
  return inv;
}

void check_inv_freq(const RopeParams& p, int head_dim, int64_t seq_len, const std::string& what) {
  const int dim = p.rotary_dim ? p.rotary_dim : head_dim;
  const std::vector<float> got = rope_inv_freq(p, head_dim, seq_len);
  const std::vector<double> ref = ref_inv_freq(p, dim, seq_len);
  CHECK_MSG(got.size() == ref.size(), what + ": wrong number of frequencies");
  int bad = 0;
  for (size_t i = 0; i < ref.size() && i < got.size(); ++i)
    if (!(std::fabs(got[i] - ref[i]) <= 16 * kUlp * ref[i])) ++bad;
  CHECK_MSG(bad == 0, what + ": " + std::to_string(bad) + " frequencies differ from the formula");
}

}  // namespace

TEST(inv_freq_default_and_linear) {
  RopeParams p;
  check_inv_freq(p, 64, 0, "default theta 1e4 d64");
  p.theta = 500000.0f;
  check_inv_freq(p, 128, 0, "default theta 5e5 d128");
  p.rotary_dim = 32;
  check_inv_freq(p, 128, 0, "partial rotary 32 of 128");
  p = RopeParams{};
  p.scaling = RopeScaling::kLinear;
  p.factor = 4.0f;
  check_inv_freq(p, 64, 0, "linear x4");
  p.factor = 3.0f;
  check_inv_freq(p, 96, 0, "linear x3 d96");
}

TEST(inv_freq_llama3_bands) {
  RopeParams p;
  p.theta = 500000.0f;
  p.scaling = RopeScaling::kLlama3;
  p.factor = 8.0f;
  p.low_freq_factor = 1.0f;
  p.high_freq_factor = 4.0f;
  p.original_max_position = 8192;
  check_inv_freq(p, 128, 0, "llama3.1 8B");
  // The three bands all occur: unchanged (high frequency), divided by factor, and smoothed.
  const std::vector<float> got = rope_inv_freq(p, 128, 0);
  p.scaling = RopeScaling::kNone;
  const std::vector<float> plain = rope_inv_freq(p, 128, 0);
  int same = 0, divided = 0, smoothed = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (got[i] == plain[i])
      ++same;
    else if (std::fabs(got[i] - plain[i] / 8.0f) <= 1e-6 * got[i])
      ++divided;
    else
      ++smoothed;
  }
  CHECK(same > 0 && divided > 0 && smoothed > 0);
  p.scaling = RopeScaling::kLlama3;
  p.theta = 10000.0f;
  p.factor = 32.0f;
  p.original_max_position = 2048;
  p.high_freq_factor = 8.0f;
  check_inv_freq(p, 64, 0, "llama3 small");
}

TEST(inv_freq_dynamic_ntk) {
  RopeParams p;
  p.scaling = RopeScaling::kDynamicNTK;
  p.factor = 2.0f;
  p.original_max_position = 2048;
  check_inv_freq(p, 64, 100, "dynamic within the original length");
  const std::vector<float> a = rope_inv_freq(p, 64, 2048);
  p.scaling = RopeScaling::kNone;
  CHECK(a == rope_inv_freq(p, 64, 0));  // unchanged up to max_position_embeddings
  p.scaling = RopeScaling::kDynamicNTK;
  check_inv_freq(p, 64, 5000, "dynamic grown to 5000");
  check_inv_freq(p, 128, 2049, "dynamic grown to 2049");
  p.factor = 4.0f;
  check_inv_freq(p, 64, 9000, "dynamic x4 grown to 9000");
}

namespace {

struct ApplyCase {
  RopeStyle style;
  int64_t T, H, D;
  int rotary_dim;
  DType pos_type;
  bool fused;  // x is the K part of a fused [T, Hq + 2 Hk, D] buffer
  RopeScaling scaling;
  int threads;
};

void run_apply(const ApplyCase& c, uint32_t seed) {
  RopeParams p;
  p.style = c.style;
  p.rotary_dim = c.rotary_dim;
  p.scaling = c.scaling;
  p.factor = 2.0f;
  p.original_max_position = 1024;
  const int64_t heads_total = c.fused ? 3 * c.H : c.H;  // q, k, v of H heads each
  const int64_t row = heads_total * c.D;
  const std::vector<float> orig = fa_test::randn(c.T * row, seed);
  std::vector<float> buf = orig;
  std::vector<int64_t> pos64(c.T);
  std::vector<int32_t> pos32(c.T);
  std::mt19937 gen(seed);
  for (int64_t t = 0; t < c.T; ++t) {
    pos64[t] = (t == 0) ? 0 : static_cast<int64_t>(gen() % 5000);  // up to a few thousand
    pos32[t] = static_cast<int32_t>(pos64[t]);
  }
  const int64_t off = c.fused ? c.H * c.D : 0;  // K starts after Q
  Tensor x(buf.data() + off, DType::kFloat32, {c.T, c.H, c.D}, {row, c.D, 1});
  Tensor pos = c.pos_type == DType::kInt32 ? Tensor(pos32.data(), DType::kInt32, {c.T})
                                           : Tensor(pos64.data(), DType::kInt64, {c.T});
  int64_t max_pos = 0;
  for (int64_t v : pos64) max_pos = std::max(max_pos, v);
  // The kernel's float32 frequencies, widened: the rotation is checked given them (the formulas
  // are checked above).
  const std::vector<float> inv = rope_inv_freq(p, static_cast<int>(c.D), max_pos + 1);
  apply_rope(cpu_context(c.threads), p, x, pos);

  const int64_t half = static_cast<int64_t>(inv.size());
  int bad = 0;
  for (int64_t t = 0; t < c.T; ++t) {
    for (int64_t j = 0; j < row; ++j) {
      const int64_t h = j / c.D - (c.fused ? c.H : 0), d = j % c.D;
      const size_t idx = t * row + j;
      if (h < 0 || h >= c.H || d >= 2 * half) {  // not ours, or beyond rotary_dim: untouched
        if (!(buf[idx] == orig[idx])) ++bad;
        continue;
      }
      // Pair partner and the rotation of this element, in float64.
      const int64_t i = c.style == RopeStyle::kNeox ? d % half : d / 2;
      const bool first = c.style == RopeStyle::kNeox ? d < half : d % 2 == 0;
      const int64_t da = c.style == RopeStyle::kNeox ? i : 2 * i;
      const int64_t db = c.style == RopeStyle::kNeox ? i + half : 2 * i + 1;
      const double a = orig[t * row + (j - d) + da], b = orig[t * row + (j - d) + db];
      const double angle = static_cast<double>(pos64[t]) * inv[i];
      const double ref = first ? a * std::cos(angle) - b * std::sin(angle)
                               : b * std::cos(angle) + a * std::sin(angle);
      // float32 angle (position * inv_freq rounded), cos/sin and products rounded.
      const double tol = std::hypot(a, b) * (2 * kUlp * std::fabs(angle) + 8 * kUlp);
      if (!(std::fabs(buf[idx] - ref) <= tol)) ++bad;
    }
  }
  CHECK_MSG(bad == 0, std::string(c.style == RopeStyle::kNeox ? "neox" : "interleaved") +
                          " T=" + std::to_string(c.T) + " H=" + std::to_string(c.H) +
                          " D=" + std::to_string(c.D) + " rotary=" + std::to_string(c.rotary_dim) +
                          ": " + std::to_string(bad) + " bad elements");
}

}  // namespace

TEST(apply_rope_matches_float64) {
  uint32_t seed = 3;
  for (RopeStyle style : {RopeStyle::kNeox, RopeStyle::kInterleaved})
    for (int rotary : {0, 32})
      for (DType pt : {DType::kInt32, DType::kInt64})
        for (bool fused : {false, true}) {
          run_apply({style, 7, 3, 64, rotary, pt, fused, RopeScaling::kNone, 1}, seed);
          run_apply({style, 1, 2, 128, rotary, pt, fused, RopeScaling::kLlama3, 1}, seed + 100);
          ++seed;
        }
}

TEST(apply_rope_scalings_and_threads) {
  for (RopeScaling s : {RopeScaling::kLinear, RopeScaling::kDynamicNTK})
    run_apply({RopeStyle::kNeox, 33, 4, 64, 0, DType::kInt64, true, s, 2}, 21);
  // Enough work to split across threads.
  run_apply({RopeStyle::kNeox, 64, 12, 64, 0, DType::kInt32, true, RopeScaling::kNone, 2}, 22);
  run_apply({RopeStyle::kInterleaved, 64, 8, 80, 64, DType::kInt64, false, RopeScaling::kNone, 2},
            23);
}

TEST(apply_rope_reuses_its_table_only_when_it_matches) {
  // The CPU kernel keeps the last cos / sin table of the calling thread and reuses it when the
  // frequencies and the positions match exactly: calls that change either, one at a time, must
  // each match the float64 reference (same positions with another theta or rotary dim, then the
  // same position buffer with one entry changed in place).
  for (int rep = 0; rep < 2; ++rep) {
    run_apply({RopeStyle::kNeox, 40, 4, 64, 0, DType::kInt32, true, RopeScaling::kNone, 2}, 31);
    run_apply({RopeStyle::kNeox, 40, 4, 64, 32, DType::kInt32, true, RopeScaling::kNone, 2}, 31);
    run_apply({RopeStyle::kNeox, 40, 4, 64, 0, DType::kInt32, true, RopeScaling::kLinear, 2}, 31);
  }
  std::vector<float> x = fa_test::randn(3 * 2 * 64, 6), y = x;
  std::vector<int32_t> pos = {5, 9, 700};
  const Tensor pt(pos.data(), DType::kInt32, {3});
  Tensor xt(x.data(), DType::kFloat32, {3, 2, 64});
  apply_rope(cpu_context(), RopeParams{}, xt, pt);
  pos[2] = 701;  // same buffer, new content
  Tensor yt(y.data(), DType::kFloat32, {3, 2, 64});
  apply_rope(cpu_context(), RopeParams{}, yt, pt);
  CHECK(std::equal(x.begin(), x.begin() + 2 * 2 * 64, y.begin()));  // tokens 0, 1: same angles
  CHECK(!std::equal(x.begin() + 2 * 2 * 64, x.end(), y.begin() + 2 * 2 * 64));
  // Token 2 of y equals a fresh rotation at position 701.
  std::vector<float> z(y.begin(), y.end());
  std::vector<float> fresh = fa_test::randn(3 * 2 * 64, 6);
  std::vector<int32_t> one = {701};
  Tensor ft(fresh.data() + 2 * 2 * 64, DType::kFloat32, {1, 2, 64});
  apply_rope(cpu_context(), RopeParams{}, ft, Tensor(one.data(), DType::kInt32, {1}));
  CHECK(std::equal(fresh.begin() + 2 * 2 * 64, fresh.end(), z.begin() + 2 * 2 * 64));
}

TEST(apply_rope_position_zero_is_identity) {
  std::vector<float> x = fa_test::randn(2 * 64, 5), before = x;
  std::vector<int32_t> pos = {0, 0};
  Tensor xt(x.data(), DType::kFloat32, {2, 1, 64});
  apply_rope(cpu_context(), RopeParams{}, xt, Tensor(pos.data(), DType::kInt32, {2}));
  CHECK(x == before);
}

TEST(rope_bad_arguments) {
  std::vector<float> x(2 * 2 * 8, 1.0f);
  std::vector<int32_t> pos = {0, 1};
  std::vector<float> fpos = {0, 1};
  const Context ctx = cpu_context();
  Tensor xt(x.data(), DType::kFloat32, {2, 2, 8});
  Tensor pt(pos.data(), DType::kInt32, {2});
  RopeParams p;
  apply_rope(ctx, p, xt, pt);  // the good call works
  p.rotary_dim = 5;
  CHECK_THROWS(apply_rope(ctx, p, xt, pt), InvalidArgument, "must be even");
  p.rotary_dim = 10;
  CHECK_THROWS(apply_rope(ctx, p, xt, pt), InvalidArgument,
               "rotary_dim 10 must lie in [0, head_dim = 8]");
  p = RopeParams{};
  p.theta = -1.0f;
  CHECK_THROWS(apply_rope(ctx, p, xt, pt), InvalidArgument, "theta");
  p = RopeParams{};
  p.scaling = RopeScaling::kLlama3;
  p.factor = 8.0f;
  CHECK_THROWS(apply_rope(ctx, p, xt, pt), InvalidArgument, "original_max_position");
  p = RopeParams{};
  p.scaling = RopeScaling::kLinear;
  p.factor = 0.0f;
  CHECK_THROWS(apply_rope(ctx, p, xt, pt), InvalidArgument, "factor");
  p = RopeParams{};
  CHECK_THROWS(apply_rope(ctx, p, xt, Tensor(fpos.data(), DType::kFloat32, {2})), InvalidArgument,
               "positions: expected int32 or int64");
  CHECK_THROWS(apply_rope(ctx, p, xt, Tensor(pos.data(), DType::kInt32, {1})), InvalidArgument,
               "positions: expected shape [2]");
  pos[1] = -3;
  CHECK_THROWS(apply_rope(ctx, p, xt, pt), InvalidArgument, "position -3 at index 1 is negative");
  pos[1] = 1;
  Tensor x2(x.data(), DType::kFloat32, {2, 16});
  CHECK_THROWS(apply_rope(ctx, p, x2, pt), InvalidArgument, "x: expected 3 dimensions");
  Tensor xc = fa_test::on_cuda(xt);
  CHECK_THROWS(apply_rope(ctx, p, xc, pt), InvalidArgument, "x: expected a CPU tensor");
}

TEST_MAIN()

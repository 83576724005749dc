// The CPU attention's 16-lane vector (kernels/cpu/fmha_simd.h) in whichever form this build
// compiles (AVX-512, two AVX2 registers, or the portable loops), against float64 references and
// the special values the attention kernels rely on: exp2 of -inf is 0, NaN stays NaN, partial
// loads / stores touch only their lanes, and the transposes move every element.
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "fastattn/kernels/cpu/fmha_simd.h"
#include "test_util.h"

namespace simd = fastattn::kernels::cpu::simd;

namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

std::vector<float> lanes(simd::V16 v) {
  std::vector<float> out(16);
  simd::store(out.data(), v);
  return out;
}

}  // namespace

TEST(simd_exp2_matches_float64) {
  // Scores in the log2 domain: large negative (underflow to denormals and zero), around zero,
  // up to the top of float's range.
  std::vector<float> xs;
  for (float x = -170.0f; x < 128.0f; x += 0.37f) xs.push_back(x);
  for (float x = -1.0f; x <= 1.0f; x += 1.0f / 64) xs.push_back(x);
  xs.push_back(-126.5f), xs.push_back(-149.0f), xs.push_back(-159.9f), xs.push_back(127.4f);
  while (xs.size() % 16 != 0) xs.push_back(0.0f);
  double worst = 0.0;
  for (size_t i = 0; i < xs.size(); i += 16) {
    const std::vector<float> got = lanes(simd::exp2(simd::load(xs.data() + i)));
    for (int l = 0; l < 16; ++l) {
      const float x = xs[i + l];
      const double ref = x < simd::kExp2Floor ? 0.0 : std::exp2(static_cast<double>(x));
      if (ref < 1e-37) {  // denormal range: an absolute bound (one denormal step, 2^-149)
        CHECK_MSG(std::fabs(got[l] - ref) <= 2.0 * std::ldexp(1.0, -149),
                  "exp2(" + std::to_string(x) + ") = " + std::to_string(got[l]));
        continue;
      }
      const double rel = std::fabs(got[l] - ref) / ref;
      worst = std::fmax(worst, rel);
      CHECK_MSG(rel < 4e-7, "exp2(" + std::to_string(x) + "): relative error " +
                                std::to_string(rel) + " (got " + std::to_string(got[l]) + ")");
    }
  }
  std::printf("  exp2: worst relative error %.3g over %zu values\n", worst, xs.size());
}

TEST(simd_exp2_special_values) {
  float in[16] = {-kInf,   kNaN,   kInf, -1e30f, 0.0f,   -0.0f,   1.0f, -160.0f,
                  -170.0f, 200.0f, 0.5f, -0.5f,  127.0f, -126.0f, 3.0f, -kInf};
  const std::vector<float> got = lanes(simd::exp2(simd::load(in)));
  CHECK(got[0] == 0.0f);
  CHECK(std::isnan(got[1]));  // a NaN score must not become a zero weight
  CHECK(std::isnan(got[2]) || std::isinf(got[2]));
  CHECK(got[3] == 0.0f);
  CHECK(got[4] == 1.0f && got[5] == 1.0f && got[6] == 2.0f);
  CHECK(got[7] == 0.0f && got[8] == 0.0f);
  CHECK(std::isinf(got[9]));
  CHECK(std::fabs(got[10] - std::sqrt(2.0f)) < 1e-6f);
  CHECK(got[12] == std::ldexp(1.0f, 127) && got[13] == std::ldexp(1.0f, -126) && got[14] == 8.0f);
  CHECK(got[15] == 0.0f);
}

TEST(simd_arithmetic_and_masks) {
  float a[16], b[16], c[16];
  for (int i = 0; i < 16; ++i) a[i] = 0.5f * i - 3.0f, b[i] = 1.25f - 0.1f * i, c[i] = 0.01f * i;
  const simd::V16 va = simd::load(a), vb = simd::load(b), vc = simd::load(c);
  const std::vector<float> add = lanes(simd::add(va, vb)), sub = lanes(simd::sub(va, vb)),
                           mul = lanes(simd::mul(va, vb)), mx = lanes(simd::max(va, vb)),
                           fma = lanes(simd::fma(va, vb, vc));
  double sum = 0.0;
  float largest = a[0];
  for (int i = 0; i < 16; ++i) {
    CHECK(add[i] == a[i] + b[i] && sub[i] == a[i] - b[i] && mul[i] == a[i] * b[i]);
    CHECK(mx[i] == (a[i] > b[i] ? a[i] : b[i]));
    CHECK(fma[i] == std::fma(a[i], b[i], c[i]));
    sum += a[i];
    largest = std::fmax(largest, a[i]);
  }
  CHECK(std::fabs(simd::reduce_add(va) - sum) < 1e-5);
  CHECK(simd::reduce_max(va) == largest);
  // max returns its second operand where either is NaN (a NaN score survives the running max).
  float n[16];
  for (int i = 0; i < 16; ++i) n[i] = i % 2 ? kNaN : 1.0f;
  const std::vector<float> m1 = lanes(simd::max(simd::splat(5.0f), simd::load(n)));
  for (int i = 0; i < 16; ++i) CHECK(i % 2 ? std::isnan(m1[i]) : m1[i] == 5.0f);
  // zero_if_neg_inf touches only -inf lanes.
  float z[16];
  for (int i = 0; i < 16; ++i) z[i] = i % 3 == 0 ? -kInf : -1.0f * i;
  const std::vector<float> zz = lanes(simd::zero_if_neg_inf(simd::load(z)));
  for (int i = 0; i < 16; ++i) CHECK(zz[i] == (i % 3 == 0 ? 0.0f : -1.0f * i));
  // mask_outside: lanes whose key j lies outside [lo, hi] become -inf.
  int32_t lo[16], hi[16], pos[16];
  float slope[16];
  for (int i = 0; i < 16; ++i) lo[i] = i, hi[i] = i + 4, pos[i] = 3 * i, slope[i] = 0.25f * i;
  for (int32_t j : {-1, 0, 5, 9, 30}) {
    const std::vector<float> mo = lanes(simd::mask_outside(va, lo, hi, j));
    for (int i = 0; i < 16; ++i) CHECK(mo[i] == ((j < lo[i] || j > hi[i]) ? -kInf : a[i]));
    const std::vector<float> al = lanes(simd::add_alibi(va, slope, pos, j));
    for (int i = 0; i < 16; ++i) {
      const double ref = a[i] - static_cast<double>(slope[i]) * std::abs(pos[i] - j);
      CHECK(std::fabs(al[i] - ref) <= 1e-6 * (1.0 + std::fabs(ref)));
    }
  }
}

TEST(simd_partial_loads_and_stores) {
  float src[16], dst[16];
  for (int i = 0; i < 16; ++i) src[i] = 1.0f + i;
  for (int n = 0; n < 16; ++n) {
    const std::vector<float> got = lanes(simd::load_first(src, n));
    for (int i = 0; i < 16; ++i) CHECK(got[i] == (i < n ? src[i] : 0.0f));
    for (float& d : dst) d = kNaN;  // poisoned: lanes past n must stay untouched
    simd::store_first(dst, simd::load(src), n);
    for (int i = 0; i < 16; ++i) CHECK(i < n ? dst[i] == src[i] : std::isnan(dst[i]));
  }
}

TEST(simd_transposes) {
  // Odd sizes exercise the 16 x 16 blocks and the scalar edges; strides wider than the rows.
  for (const auto& [rows, cols] : {std::pair{16, 16}, std::pair{64, 80}, std::pair{37, 19}}) {
    const int ss = cols + 3, ds = rows + 5;
    std::vector<float> src(static_cast<size_t>(rows) * ss),
        dst(static_cast<size_t>(cols) * ds, kNaN);
    for (size_t i = 0; i < src.size(); ++i) src[i] = static_cast<float>(i % 1009) - 500.0f;
    simd::transpose(src.data(), ss, rows, cols, dst.data(), ds, 0.5f);
    for (int r = 0; r < rows; ++r)
      for (int c = 0; c < cols; ++c)
        CHECK(dst[static_cast<size_t>(c) * ds + r] == src[static_cast<size_t>(r) * ss + c] * 0.5f);
    for (int c = 0; c < cols; ++c)  // the padding of each destination row is untouched
      for (int r = rows; r < ds; ++r) CHECK(std::isnan(dst[static_cast<size_t>(c) * ds + r]));
  }
}

TEST_MAIN()

#include "fastattn/core/allocator.h"
#include "fastattn/core/dtype.h"
#include "fastattn/core/env.h"
#include "fastattn/core/error.h"
#include "fastattn/core/tensor.h"
#include "test_util.h"

using namespace fastattn;

TEST(half_round_trip) {
  const float values[] = {0.0f, 1.0f, -2.5f, 65504.0f, 6.1035156e-05f, 5.9604645e-08f, 0.333333f};
  for (float v : values) {
    const float back = half_to_float(float_to_half(v));
    CHECK_NEAR(back, v, std::fabs(v) * 1e-3 + 1e-7);
  }
  CHECK(std::isinf(half_to_float(float_to_half(1e6f))));
  CHECK(std::isnan(half_to_float(float_to_half(std::nanf("")))));
}

TEST(bf16_round_trip) {
  const float values[] = {0.0f, 1.0f, -3.140625f, 1e30f, 1e-30f};
  for (float v : values) CHECK_NEAR(bf16_to_float(float_to_bf16(v)), v, std::fabs(v) * 4e-3);
  // Round to nearest even: 1 + 2^-8 is a tie between 1 and 1 + 2^-7; goes to 1.
  CHECK(bf16_to_float(float_to_bf16(1.0f + 1.0f / 256)) == 1.0f);
}

TEST(bulk_conversion_matches_scalar) {
  auto src = fa_test::randn(1003, 1);
  for (DType dt : {DType::kFloat16, DType::kBFloat16}) {
    std::vector<uint16_t> packed(src.size());
    std::vector<float> back(src.size(), fa_test::kPoison);
    convert_from_float(src.data(), packed.data(), dt, static_cast<int64_t>(src.size()));
    convert_to_float(packed.data(), dt, back.data(), static_cast<int64_t>(src.size()));
    for (size_t i = 0; i < src.size(); ++i) {
      const uint16_t scalar = dt == DType::kFloat16 ? float_to_half(src[i]) : float_to_bf16(src[i]);
      CHECK(packed[i] == scalar);
      CHECK(back[i] == (dt == DType::kFloat16 ? half_to_float(scalar) : bf16_to_float(scalar)));
    }
  }
}

TEST(tensor_views) {
  std::vector<float> data(2 * 3 * 4);
  Tensor t(data.data(), DType::kFloat32, {2, 3, 4});
  CHECK(t.is_contiguous());
  CHECK(t.numel() == 24);
  Tensor s = t.slice(1, 1, 3);
  CHECK(s.size(1) == 2 && !s.is_contiguous());
  CHECK(s.data_as<float>() == data.data() + 4);
  Tensor r = t.select(0, 1);
  CHECK(r.dim() == 2 && r.data_as<float>() == data.data() + 12);
  CHECK_THROWS(t.reshape({5, 5}), InvalidArgument, "cannot reshape");
  CHECK_THROWS(t.slice(1, 2, 4), InvalidArgument, "out of range");
  CHECK_THROWS(check_shape(t, "query", {2, 3, 5}), InvalidArgument,
               "query: expected shape [2, 3, 5]");
  CHECK_THROWS(dtype_from_name("float8"), InvalidArgument, "unknown dtype 'float8'");
}

TEST(owned_tensor_grows) {
  OwnedTensor o(host_allocator(), DType::kFloat32, {4, 4});
  CHECK(o.view().numel() == 16);
  o.resize(DType::kFloat32, {8, 8});
  CHECK(o.view().numel() == 64);
}

TEST(environment_switches) {
  const char* name = "FASTATTN_TEST_ENV_SWITCH";
  unsetenv(name);
  CHECK(env_int(name, 7, 1, 10) == 7);
  CHECK(env_flag(name, true));
  setenv(name, "4", 1);
  CHECK(env_int(name, 7, 1, 10) == 4);
  for (const char* bad : {"0", "11", "4x", "x", "-3", "99999999999999999999"}) {
    setenv(name, bad, 1);
    CHECK_THROWS(env_int(name, 7, 1, 10), InvalidArgument,
                 "FASTATTN_TEST_ENV_SWITCH: expected an integer in [1, 10]");
  }
  setenv(name, "yes", 1);
  CHECK_THROWS(env_flag(name, false), InvalidArgument, "expected 0 or 1, got 'yes'");
  unsetenv(name);
}

TEST_MAIN()

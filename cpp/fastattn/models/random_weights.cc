#include "fastattn/models/random_weights.h"

#include <vector>

#include "fastattn/core/error.h"

namespace fastattn::models {
namespace {

constexpr uint64_t kGolden = 0x9E3779B97F4A7C15ull;

inline uint64_t splitmix64(uint64_t z) {
  z ^= z >> 30;
  z *= 0xBF58476D1CE4E5B9ull;
  z ^= z >> 27;
  z *= 0x94D049BB133111EBull;
  z ^= z >> 31;
  return z;
}

uint64_t fnv1a64(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

}  // namespace

uint64_t random_weight_key(uint64_t seed, const std::string& name) {
  return splitmix64(seed ^ fnv1a64(name));
}

void fill_random_weight(const Context& ctx, const RandomFillParams& p, const Tensor& logical_rows,
                        Tensor& out) {
  const std::string what = "random weight '" + p.name + "'";
  FA_CHECK(out.dim() == 1 || out.dim() == 2, what, ": expected a 1-D or 2-D tensor, got ",
           shape_str(out.shape()));
  check_floating(out, what.c_str());
  check_contiguous(out, what.c_str());
  check_cpu(out, what.c_str());
  check_dtype(logical_rows, "logical_rows", DType::kInt64);
  check_contiguous(logical_rows, "logical_rows");
  check_cpu(logical_rows, "logical_rows");
  const int64_t rows = out.size(0);
  const int64_t cols = out.dim() == 2 ? out.size(1) : 1;
  check_shape(logical_rows, "logical_rows", {rows});
  FA_CHECK(p.logical_cols >= 1 && p.col_offset >= 0 && p.col_offset + cols <= p.logical_cols, what,
           ": columns ", p.col_offset, " .. ", p.col_offset + cols,
           " do not fit the logical tensor's ", p.logical_cols, " columns");
  const int64_t* lrow = logical_rows.data_as<int64_t>();
  for (int64_t r = 0; r < rows; ++r) {
    FA_CHECK(lrow[r] >= -1, "logical_rows[", r, "] = ", lrow[r], ": must be >= 0 (or -1: zeros)");
  }

  const uint64_t key = random_weight_key(p.seed, p.name);
  // Rounded to float32 so that scale * (2u - 1) below is exact in double.
  const double scale = static_cast<float>(p.scale);
  const double shift = static_cast<float>(p.shift);
  const DType dt = out.dtype();
  const size_t item = dtype_size(dt);
  char* base = static_cast<char*>(out.data());
  const int threads = context_threads(ctx);
  const int team = rows * cols >= (1 << 16) ? threads : 1;
#pragma omp parallel num_threads(team)
  {
    std::vector<float> row_values(static_cast<size_t>(cols));
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      float* v = dt == DType::kFloat32
                     ? reinterpret_cast<float*>(base + static_cast<size_t>(r * cols) * item)
                     : row_values.data();
      if (lrow[r] < 0) {
        for (int64_t c = 0; c < cols; ++c) v[c] = 0.0f;
      } else {
        // The logical index fits uint64 for any tensor a machine can hold.
        const uint64_t first =
            static_cast<uint64_t>(lrow[r]) * static_cast<uint64_t>(p.logical_cols) +
            static_cast<uint64_t>(p.col_offset) + 1;
        for (int64_t c = 0; c < cols; ++c) {
          const uint64_t h = splitmix64(key + (first + static_cast<uint64_t>(c)) * kGolden);
          const double u = static_cast<double>(h >> 40) * (1.0 / 16777216.0);
          // scale * (2u - 1) is exact in double (a 24-bit times a 25-bit significand), so the
          // value does not depend on whether the compiler fuses the multiply-add.
          v[c] = static_cast<float>(shift + scale * (2.0 * u - 1.0));
        }
      }
      if (dt != DType::kFloat32) {
        convert_from_float(v, base + static_cast<size_t>(r * cols) * item, dt, cols);
      }
    }
  }
}

}  // namespace fastattn::models

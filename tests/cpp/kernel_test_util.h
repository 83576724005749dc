// Helpers for the CPU kernel tests: random data stored in any float dtype together with the exact
// values it holds after widening (so float64 references see what the kernel sees).
#pragma once

#include <cstdint>
#include <cstring>
#include <vector>

#include "fastattn/core/dtype.h"
#include "fastattn/core/tensor.h"
#include "test_util.h"

namespace fa_test {

inline const fastattn::DType kFloatTypes[] = {fastattn::DType::kFloat32, fastattn::DType::kFloat16,
                                              fastattn::DType::kBFloat16};

// n values of dtype dt in raw storage (8-byte aligned) plus their exact float values.
struct FloatData {
  fastattn::DType dtype = fastattn::DType::kFloat32;
  std::vector<uint64_t> storage;
  std::vector<float> values;
  void* data() { return storage.data(); }
  const void* data() const { return storage.data(); }
  size_t size() const { return values.size(); }
  // Writes `v` at element i (rounded to the dtype) and records the stored value.
  void set(size_t i, float v) {
    using namespace fastattn;
    if (dtype == DType::kFloat32) {
      reinterpret_cast<float*>(storage.data())[i] = v;
      values[i] = v;
    } else {
      const uint16_t h = dtype == DType::kFloat16 ? float_to_half(v) : float_to_bf16(v);
      reinterpret_cast<uint16_t*>(storage.data())[i] = h;
      values[i] = dtype == DType::kFloat16 ? half_to_float(h) : bf16_to_float(h);
    }
  }
};

inline FloatData make_float_data(fastattn::DType dt, size_t n, uint32_t seed, float scale = 1.0f) {
  FloatData d;
  d.dtype = dt;
  d.storage.assign((n * fastattn::dtype_size(dt) + 7) / 8 + 1, 0);
  d.values.resize(n);
  const std::vector<float> r = randn(n, seed, scale);
  for (size_t i = 0; i < n; ++i) d.set(i, r[i]);
  return d;
}

// Reads element i of raw storage of dtype dt as a double.
inline double read_float(const void* p, fastattn::DType dt, size_t i) {
  using namespace fastattn;
  switch (dt) {
    case DType::kFloat32:
      return static_cast<const float*>(p)[i];
    case DType::kFloat16:
      return half_to_float(static_cast<const uint16_t*>(p)[i]);
    case DType::kBFloat16:
      return bf16_to_float(static_cast<const uint16_t*>(p)[i]);
    default:
      return 0.0;
  }
}

// Fills raw storage of n elements of dtype dt with a NaN pattern.
inline void poison(void* p, fastattn::DType dt, size_t n) {
  using namespace fastattn;
  if (dt == DType::kFloat32) {
    float* f = static_cast<float*>(p);
    for (size_t i = 0; i < n; ++i) f[i] = kPoison;
  } else {
    uint16_t* h = static_cast<uint16_t*>(p);
    const uint16_t nan16 = dt == DType::kFloat16 ? 0x7e00 : 0x7fc0;
    for (size_t i = 0; i < n; ++i) h[i] = nan16;
  }
}

// A tensor that claims to live on a GPU (for the "CPU tensors only" checks; never dereferenced).
inline fastattn::Tensor on_cuda(const fastattn::Tensor& t) {
  return fastattn::Tensor(t.data(), t.dtype(), t.shape(), t.strides(),
                          fastattn::Device{fastattn::DeviceType::kCUDA, 0});
}

}  // namespace fa_test

// Test fixtures for fmha_forward: builds a random attention problem (any dtypes, GQA, varlen,
// paged or fused-QKV layouts, masks, ALiBi), runs the kernel into NaN-poisoned outputs, and
// measures its error against a float64 reference next to the error of a straightforward
// implementation in the storage precision.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "fastattn/core/context.h"
#include "fastattn/core/dtype.h"
#include "fastattn/core/tensor.h"
#include "fastattn/kernels/attention/fmha.h"
#include "test_util.h"

namespace fmha_test {

using fastattn::DType;
using fastattn::Tensor;

struct Spec {
  std::vector<int> sq, sk;  // per-sequence query / key lengths
  int hq = 2, hk = 2, d = 64;
  DType q_dtype = DType::kFloat32, kv_dtype = DType::kFloat32, out_dtype = DType::kFloat32;
  bool causal = false;
  int wl = -1, wr = -1;
  int alibi = 0;       // 0 none, 1 slopes [Hq], 2 slopes [B, Hq]
  int block_size = 0;  // > 0: paged KV with a shuffled block table
  bool fused_qkv =
      false;  // q / k / v are views into one [T, (Hq + 2 Hk) * D] buffer (needs sq == sk)
  bool padded_out = false;  // out rows carry padding that must stay untouched
  float scale = 0.0f;
  int threads = 2;
  uint32_t seed = 1;
};

inline void put(DType dt, void* base, int64_t i, float x) {
  if (dt == DType::kFloat32) {
    static_cast<float*>(base)[i] = x;
  } else if (dt == DType::kFloat16) {
    static_cast<uint16_t*>(base)[i] = fastattn::float_to_half(x);
  } else {
    static_cast<uint16_t*>(base)[i] = fastattn::float_to_bf16(x);
  }
}

inline float get(DType dt, const void* base, int64_t i) {
  if (dt == DType::kFloat32) return static_cast<const float*>(base)[i];
  if (dt == DType::kFloat16) return fastattn::half_to_float(static_cast<const uint16_t*>(base)[i]);
  return fastattn::bf16_to_float(static_cast<const uint16_t*>(base)[i]);
}

inline float round_to(DType dt, float x) {
  if (dt == DType::kFloat16) return fastattn::half_to_float(fastattn::float_to_half(x));
  if (dt == DType::kBFloat16) return fastattn::bf16_to_float(fastattn::float_to_bf16(x));
  return x;
}

// Bytes for n elements, 64-byte aligned storage.
struct Storage {
  std::vector<float> words;  // float-sized words: room for any dtype
  void* data() { return words.data(); }
  void resize_elems(DType dt, int64_t n) {
    words.assign(
        static_cast<size_t>((n * static_cast<int64_t>(fastattn::dtype_size(dt)) + 3) / 4 + 16),
        0.0f);
  }
};

struct Result {
  double err = 0, naive_err = 0;          // max |out - ref|
  double lse_err = 0, naive_lse_err = 0;  // max |lse - ref| over rows with visible keys
  bool empty_rows_ok = true;              // rows with no visible key: out == 0, lse == -inf
  bool all_finite = true;                 // no poison left in out / lse
  bool padding_untouched = true;
  std::vector<float> out;  // decoded kernel output [total_q][Hq][D]
};

class Problem {
 public:
  explicit Problem(const Spec& s);
  // Runs fmha_forward and compares with the references.
  Result run(int threads = -1);
  fastattn::kernels::FmhaParams params;  // views into this problem's storage

 private:
  bool visible(int b, int i, int j) const;
  void reference(std::vector<double>& out, std::vector<double>& lse) const;
  void naive(std::vector<float>& out, std::vector<float>& lse) const;
  // f(b, i, t, h, kh) for every query i of every sequence b (packed row t) and every head h
  // (reading KV head kh): the rows the references compute.
  template <class F>
  void for_each_query_head(F&& f) const;
  // Where row t, head h starts in q_ (and in the references' out); key j of sequence b, KV head
  // kh in k_ / v_.
  int64_t q_offset(int64_t t, int h) const { return (t * spec_.hq + h) * spec_.d; }
  int64_t kv_offset(size_t b, int j, int kh) const {
    return (int64_t(cu_k_[b] + j) * spec_.hk + kh) * spec_.d;
  }
  float scale() const { return spec_.scale > 0 ? spec_.scale : 1.0f / std::sqrt(float(spec_.d)); }
  float slope(int b, int h) const {
    return spec_.alibi == 0 ? 0.0f : alibi_[spec_.alibi == 2 ? b * spec_.hq + h : h];
  }

  Spec spec_;
  int64_t total_q_ = 0, total_k_ = 0;
  std::vector<int32_t> cu_q_, cu_k_, seqlens_k_, block_table_;
  std::vector<float> q_, k_, v_;  // decoded stored values, logical [tokens][heads][D]
  std::vector<float> alibi_;
  Storage q_buf_, k_buf_, v_buf_, out_buf_, qkv_buf_;
  std::vector<float> lse_buf_;
  int64_t out_row_stride_ = 0;
};

inline DType naive_dtype(const Spec& s) {
  if (s.q_dtype == DType::kBFloat16 || s.kv_dtype == DType::kBFloat16) return DType::kBFloat16;
  if (s.q_dtype == DType::kFloat16 || s.kv_dtype == DType::kFloat16) return DType::kFloat16;
  return DType::kFloat32;
}

inline Problem::Problem(const Spec& s) : spec_(s) {
  const int B = static_cast<int>(s.sq.size());
  cu_q_ = {0};
  cu_k_ = {0};
  for (int b = 0; b < B; ++b) {
    cu_q_.push_back(cu_q_.back() + s.sq[b]);
    cu_k_.push_back(cu_k_.back() + s.sk[b]);
    seqlens_k_.push_back(s.sk[b]);
  }
  total_q_ = cu_q_.back();
  total_k_ = cu_k_.back();
  std::mt19937 gen(s.seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  auto fill = [&](std::vector<float>& x, int64_t n, DType dt) {
    x.resize(static_cast<size_t>(n));
    for (auto& e : x) e = round_to(dt, normal(gen));
  };
  fill(q_, total_q_ * s.hq * s.d, s.q_dtype);
  fill(k_, total_k_ * s.hk * s.d, s.kv_dtype);
  fill(v_, total_k_ * s.hk * s.d, s.kv_dtype);
  std::uniform_real_distribution<float> uni(0.05f, 1.0f);
  alibi_.resize(static_cast<size_t>(B * s.hq));
  for (auto& a : alibi_) a = uni(gen);

  const float nan = std::numeric_limits<float>::quiet_NaN();
  const int64_t qd = s.hq * s.d, kd = s.hk * s.d;
  if (s.fused_qkv) {
    const int64_t width = qd + 2 * kd;
    qkv_buf_.resize_elems(s.q_dtype, total_q_ * width);
    for (int64_t t = 0; t < total_q_; ++t) {
      for (int64_t i = 0; i < qd; ++i)
        put(s.q_dtype, qkv_buf_.data(), t * width + i, q_[t * qd + i]);
      for (int64_t i = 0; i < kd; ++i) {
        put(s.q_dtype, qkv_buf_.data(), t * width + qd + i, k_[t * kd + i]);
        put(s.q_dtype, qkv_buf_.data(), t * width + qd + kd + i, v_[t * kd + i]);
      }
    }
    const size_t es = fastattn::dtype_size(s.q_dtype);
    char* base = static_cast<char*>(qkv_buf_.data());
    params.q = Tensor(base, s.q_dtype, {total_q_, s.hq, s.d}, {width, s.d, 1});
    params.k = Tensor(base + qd * es, s.kv_dtype, {total_k_, s.hk, s.d}, {width, s.d, 1});
    params.v = Tensor(base + (qd + kd) * es, s.kv_dtype, {total_k_, s.hk, s.d}, {width, s.d, 1});
  } else {
    q_buf_.resize_elems(s.q_dtype, total_q_ * qd);
    for (int64_t i = 0; i < total_q_ * qd; ++i) put(s.q_dtype, q_buf_.data(), i, q_[i]);
    params.q = Tensor(q_buf_.data(), s.q_dtype, {total_q_, s.hq, s.d});
    if (s.block_size > 0) {
      const int bs = s.block_size;
      int64_t max_blocks = 1, used = 0;
      for (int b = 0; b < B; ++b) {
        max_blocks = std::max<int64_t>(max_blocks, (s.sk[b] + bs - 1) / bs + 1);
        used += (s.sk[b] + bs - 1) / bs;
      }
      const int64_t num_blocks = used + 3;  // spare blocks hold NaN: reading them would show
      std::vector<int32_t> perm(static_cast<size_t>(num_blocks));
      std::iota(perm.begin(), perm.end(), 0);
      std::shuffle(perm.begin(), perm.end(), gen);
      // Unused table entries hold an out-of-range id: they must never be read.
      block_table_.assign(static_cast<size_t>(B * max_blocks), 1 << 20);
      int64_t next = 0;
      for (int b = 0; b < B; ++b) {
        for (int64_t i = 0; i < (s.sk[b] + bs - 1) / bs; ++i)
          block_table_[b * max_blocks + i] = perm[next++];
      }
      const int64_t blk_elems = bs * kd;
      k_buf_.resize_elems(s.kv_dtype, num_blocks * blk_elems);
      v_buf_.resize_elems(s.kv_dtype, num_blocks * blk_elems);
      for (int64_t i = 0; i < num_blocks * blk_elems; ++i) {
        put(s.kv_dtype, k_buf_.data(), i, nan);
        put(s.kv_dtype, v_buf_.data(), i, nan);
      }
      for (int b = 0; b < B; ++b) {
        for (int j = 0; j < s.sk[b]; ++j) {
          const int64_t blk = block_table_[b * max_blocks + j / bs];
          const int64_t dst = blk * blk_elems + (j % bs) * kd;
          const int64_t src = (cu_k_[b] + j) * kd;
          for (int64_t i = 0; i < kd; ++i) {
            put(s.kv_dtype, k_buf_.data(), dst + i, k_[src + i]);
            put(s.kv_dtype, v_buf_.data(), dst + i, v_[src + i]);
          }
        }
      }
      params.k = Tensor(k_buf_.data(), s.kv_dtype, {num_blocks, bs, s.hk, s.d});
      params.v = Tensor(v_buf_.data(), s.kv_dtype, {num_blocks, bs, s.hk, s.d});
      params.block_table = Tensor(block_table_.data(), DType::kInt32, {B, max_blocks});
      params.seqlens_k = Tensor(seqlens_k_.data(), DType::kInt32, {B});
    } else {
      k_buf_.resize_elems(s.kv_dtype, total_k_ * kd);
      v_buf_.resize_elems(s.kv_dtype, total_k_ * kd);
      for (int64_t i = 0; i < total_k_ * kd; ++i) {
        put(s.kv_dtype, k_buf_.data(), i, k_[i]);
        put(s.kv_dtype, v_buf_.data(), i, v_[i]);
      }
      params.k = Tensor(k_buf_.data(), s.kv_dtype, {total_k_, s.hk, s.d});
      params.v = Tensor(v_buf_.data(), s.kv_dtype, {total_k_, s.hk, s.d});
    }
  }
  if (s.block_size == 0) params.cu_seqlens_k = Tensor(cu_k_.data(), DType::kInt32, {B + 1});
  params.cu_seqlens_q = Tensor(cu_q_.data(), DType::kInt32, {B + 1});

  out_row_stride_ = s.padded_out ? qd + 24 : qd;
  out_buf_.resize_elems(s.out_dtype, std::max<int64_t>(1, total_q_) * out_row_stride_);
  params.out =
      Tensor(out_buf_.data(), s.out_dtype, {total_q_, s.hq, s.d}, {out_row_stride_, s.d, 1});
  lse_buf_.assign(static_cast<size_t>(std::max<int64_t>(1, s.hq * total_q_)), nan);
  params.lse = Tensor(lse_buf_.data(), DType::kFloat32, {s.hq, total_q_});
  if (s.alibi == 1) params.alibi_slopes = Tensor(alibi_.data(), DType::kFloat32, {s.hq});
  if (s.alibi == 2) params.alibi_slopes = Tensor(alibi_.data(), DType::kFloat32, {B, s.hq});
  params.softmax_scale = s.scale;
  params.causal = s.causal;
  params.window_left = s.wl;
  params.window_right = s.wr;
}

inline bool Problem::visible(int b, int i, int j) const {
  const int64_t pos = int64_t(i) + spec_.sk[b] - spec_.sq[b];
  if (spec_.causal && j > pos) return false;
  if (spec_.wl >= 0 && j < pos - spec_.wl) return false;
  if (spec_.wr >= 0 && j > pos + spec_.wr) return false;
  return true;
}

template <class F>
void Problem::for_each_query_head(F&& f) const {
  const Spec& s = spec_;
  for (size_t b = 0; b < s.sq.size(); ++b)
    for (int i = 0; i < s.sq[b]; ++i)
      for (int h = 0; h < s.hq; ++h) f(b, i, int64_t(cu_q_[b]) + i, h, h / (s.hq / s.hk));
}

inline void Problem::reference(std::vector<double>& out, std::vector<double>& lse) const {
  const Spec& s = spec_;
  out.assign(static_cast<size_t>(total_q_ * s.hq * s.d), 0.0);
  lse.assign(static_cast<size_t>(total_q_ * s.hq), -INFINITY);
  std::vector<double> sc;
  for_each_query_head([&](size_t b, int i, int64_t t, int h, int kh) {
    const int sk = s.sk[b];
    const int64_t pos = int64_t(i) + sk - s.sq[b];
    const float* q = &q_[q_offset(t, h)];
    sc.assign(static_cast<size_t>(sk), -INFINITY);
    double m = -INFINITY;
    for (int j = 0; j < sk; ++j) {
      if (!visible(int(b), i, j)) continue;
      const float* k = &k_[kv_offset(b, j, kh)];
      double dot = 0;
      for (int d = 0; d < s.d; ++d) dot += double(q[d]) * k[d];
      sc[j] = dot * scale() - double(slope(int(b), h)) * std::fabs(double(pos - j));
      m = std::max(m, sc[j]);
    }
    if (m == -INFINITY) return;
    double sum = 0;
    for (int j = 0; j < sk; ++j) sum += std::exp(sc[j] - m);
    for (int j = 0; j < sk; ++j) {
      const double p = std::exp(sc[j] - m) / sum;
      if (p == 0) continue;
      const float* v = &v_[kv_offset(b, j, kh)];
      for (int d = 0; d < s.d; ++d) out[q_offset(t, h) + d] += p * v[d];
    }
    lse[t * s.hq + h] = m + std::log(sum);
  });
}

// The textbook algorithm with every intermediate (scores, probabilities, output) stored in the
// storage precision and float32 arithmetic: the baseline error a kernel may be compared with.
inline void Problem::naive(std::vector<float>& out, std::vector<float>& lse) const {
  const Spec& s = spec_;
  const DType nd = naive_dtype(s);
  out.assign(static_cast<size_t>(total_q_ * s.hq * s.d), 0.0f);
  lse.assign(static_cast<size_t>(total_q_ * s.hq), -INFINITY);
  std::vector<float> sc, acc(static_cast<size_t>(s.d));
  for_each_query_head([&](size_t b, int i, int64_t t, int h, int kh) {
    const int sk = s.sk[b];
    const int64_t pos = int64_t(i) + sk - s.sq[b];
    const float* q = &q_[q_offset(t, h)];
    sc.assign(static_cast<size_t>(sk), -INFINITY);
    float m = -INFINITY;
    for (int j = 0; j < sk; ++j) {
      if (!visible(int(b), i, j)) continue;
      const float* k = &k_[kv_offset(b, j, kh)];
      float dot = 0;
      for (int d = 0; d < s.d; ++d) dot += q[d] * k[d];
      float x = round_to(nd, dot * scale());
      if (s.alibi) x = round_to(nd, x - slope(int(b), h) * std::fabs(float(pos - j)));
      sc[j] = x;
      m = std::max(m, x);
    }
    if (m == -INFINITY) return;
    float sum = 0;
    for (int j = 0; j < sk; ++j) sum += std::exp(sc[j] - m);
    std::fill(acc.begin(), acc.end(), 0.0f);
    for (int j = 0; j < sk; ++j) {
      const float p = round_to(nd, std::exp(sc[j] - m) / sum);
      const float* v = &v_[kv_offset(b, j, kh)];
      for (int d = 0; d < s.d; ++d) acc[d] += p * v[d];
    }
    for (int d = 0; d < s.d; ++d)
      out[q_offset(t, h) + d] = round_to(s.out_dtype, round_to(nd, acc[d]));
    lse[t * s.hq + h] = m + std::log(sum);
  });
}

inline Result Problem::run(int threads) {
  const Spec& s = spec_;
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float pad_value = 777.0f;
  for (int64_t t = 0; t < total_q_; ++t)
    for (int64_t i = 0; i < out_row_stride_; ++i)
      put(s.out_dtype, out_buf_.data(), t * out_row_stride_ + i, i < s.hq * s.d ? nan : pad_value);
  std::fill(lse_buf_.begin(), lse_buf_.end(), nan);

  const fastattn::Context ctx = fastattn::cpu_context(threads < 0 ? s.threads : threads);
  fastattn::kernels::fmha_forward(ctx, params);

  Result r;
  std::vector<double> ref_out, ref_lse;
  std::vector<float> nv_out, nv_lse;
  reference(ref_out, ref_lse);
  naive(nv_out, nv_lse);
  r.out.resize(ref_out.size());
  for (int64_t t = 0; t < total_q_; ++t) {
    for (int64_t i = 0; i < out_row_stride_; ++i) {
      const float x = get(s.out_dtype, out_buf_.data(), t * out_row_stride_ + i);
      if (i >= s.hq * s.d) {
        r.padding_untouched &= x == round_to(s.out_dtype, pad_value);
        continue;
      }
      r.out[t * s.hq * s.d + i] = x;
    }
  }
  for (int64_t t = 0; t < total_q_; ++t) {
    for (int h = 0; h < s.hq; ++h) {
      const int64_t row = t * s.hq + h;
      const float lse = lse_buf_[static_cast<size_t>(h * total_q_ + t)];
      const bool empty = ref_lse[row] == -INFINITY;
      if (empty)
        r.empty_rows_ok &= lse == -INFINITY;
      else if (!std::isfinite(lse))
        r.all_finite = false;
      else {
        r.lse_err = std::max(r.lse_err, std::fabs(lse - ref_lse[row]));
        r.naive_lse_err = std::max(r.naive_lse_err, std::fabs(nv_lse[row] - ref_lse[row]));
      }
      for (int d = 0; d < s.d; ++d) {
        const int64_t i = row * s.d + d;
        if (!std::isfinite(r.out[i])) r.all_finite = false;
        if (empty) r.empty_rows_ok &= r.out[i] == 0.0f;
        r.err = std::max(r.err, std::fabs(r.out[i] - ref_out[i]));
        r.naive_err = std::max(r.naive_err, std::fabs(nv_out[i] - ref_out[i]));
      }
    }
  }
  return r;
}

}  // namespace fmha_test

// Writes new tokens' K and V into a paged cache, converting the dtype on the way; the fused
// rope + cache write is apply_rope twice and the same write on the CPU.
#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "fastattn/kernels/cpu/cpu_util.h"
#include "fastattn/kernels/cpu/kv_cache_write_cpu.h"
#include "fastattn/kernels/cpu/rope_cpu.h"
#include "fastattn/kernels/kv_cache_write.h"

namespace fastattn::kernels {
namespace {

void check_new(const Tensor& t, const char* name) {
  check_cpu(t, name);
  check_floating(t, name);
  check_dim(t, name, 3);
  check_last_dim_contiguous(t, name);
}

void check_cache(const Tensor& t, const char* name) {
  check_cpu(t, name);
  check_floating(t, name);
  check_dim(t, name, 4);
  check_last_dim_contiguous(t, name);
}

// Copies n elements from src (type st) to dst (type dt). `tmp` holds n floats when both are
// 16-bit types of different kinds.
void copy_row(const void* src, DType st, void* dst, DType dt, int64_t n, float* tmp) {
  if (st == dt) {
    std::memcpy(dst, src, static_cast<size_t>(n) * dtype_size(st));
  } else if (dt == DType::kFloat32) {
    convert_to_float(src, st, static_cast<float*>(dst), n);
  } else if (st == DType::kFloat32) {
    convert_from_float(static_cast<const float*>(src), dst, dt, n);
  } else {
    convert_to_float(src, st, tmp, n);
    convert_from_float(tmp, dst, dt, n);
  }
}

// Writes the Hk head rows of token t of `src` [T, Hk, D] to its slot of `cache` (none for slot
// -1). `tmp` holds D floats.
void write_token(const Tensor& src, Tensor& cache, const int32_t* slots, int64_t t, float* tmp) {
  const int64_t slot = slots[t];
  if (slot < 0) return;
  const int64_t Hk = src.size(1), D = src.size(2), block_size = cache.size(1);
  const size_t s_es = dtype_size(src.dtype()), c_es = dtype_size(cache.dtype());
  const char* sp = static_cast<const char*>(src.data());
  char* cp = static_cast<char*>(cache.data());
  const int64_t block = slot / block_size, offset = slot % block_size;
  for (int64_t h = 0; h < Hk; ++h) {
    const char* s = sp + (t * src.stride(0) + h * src.stride(1)) * s_es;
    char* c =
        cp + (block * cache.stride(0) + offset * cache.stride(1) + h * cache.stride(2)) * c_es;
    copy_row(s, src.dtype(), c, cache.dtype(), D, tmp);
  }
}

// Writes every (token, head) row of `src` [T, Hk, D] to its slot of `cache`.
void write_one(const Context& ctx, const Tensor& src, Tensor& cache, const int32_t* slots) {
  const int64_t T = src.size(0), Hk = src.size(1), D = src.size(2);
#pragma omp parallel num_threads(cpu::threads_for(ctx, T * Hk * D))
  {
    std::vector<float> tmp(static_cast<size_t>(D));
#pragma omp for schedule(static)
    for (int64_t t = 0; t < T; ++t) write_token(src, cache, slots, t, tmp.data());
  }
}

}  // namespace

void check_kv_write_shapes(const Tensor& k_new, const Tensor& v_new, const char* v_name,
                           const Tensor& k_cache, const Tensor& v_cache,
                           const Tensor& slot_mapping) {
  check_dtype(slot_mapping, "slot_mapping", DType::kInt32);
  check_dim(slot_mapping, "slot_mapping", 1);
  check_contiguous(slot_mapping, "slot_mapping");
  const int64_t T = k_new.size(0), Hk = k_new.size(1);
  const int64_t num_blocks = k_cache.size(0), block_size = k_cache.size(1);
  // V may have its own head size (Dv); everything else must agree with K.
  check_shape(k_cache, "k_cache", {num_blocks, block_size, Hk, k_new.size(2)});
  check_shape(v_new, v_name, {T, Hk, v_new.size(2)});
  check_shape(v_cache, "v_cache", {num_blocks, block_size, Hk, v_new.size(2)});
  check_shape(slot_mapping, "slot_mapping", {T});
}

namespace {

// Checks every argument of a cache write, slot values included, before anything is written.
// k_name / v_name: the parameter names of the new K and V in the public call.
void check_write_args(const Tensor& k_new, const char* k_name, const Tensor& v_new,
                      const char* v_name, const Tensor& k_cache, const Tensor& v_cache,
                      const Tensor& slot_mapping) {
  check_new(k_new, k_name);
  check_new(v_new, v_name);
  check_cache(k_cache, "k_cache");
  check_cache(v_cache, "v_cache");
  check_cpu(slot_mapping, "slot_mapping");
  check_kv_write_shapes(k_new, v_new, v_name, k_cache, v_cache, slot_mapping);
  const int64_t T = k_new.size(0);
  const int64_t num_blocks = k_cache.size(0), block_size = k_cache.size(1);

  const int32_t* slots = slot_mapping.data_as<const int32_t>();
  const int64_t num_slots = num_blocks * block_size;
  for (int64_t t = 0; t < T; ++t) {
    FA_CHECK(slots[t] >= -1 && slots[t] < num_slots, "slot_mapping: slot ", slots[t],
             " at position ", t, " is out of range for a cache of ", num_blocks, " blocks x ",
             block_size, " slots (valid: 0..", num_slots - 1, ", or -1 to skip the token)");
  }
}

}  // namespace

void cpu::kv_cache_write_cpu(const Context& ctx, const Tensor& k_new, const Tensor& v_new,
                             Tensor& k_cache, Tensor& v_cache, const Tensor& slot_mapping) {
  check_write_args(k_new, "k_new", v_new, "v_new", k_cache, v_cache, slot_mapping);
  const int32_t* slots = slot_mapping.data_as<const int32_t>();
  write_one(ctx, k_new, k_cache, slots);
  write_one(ctx, v_new, v_cache, slots);
}

void cpu::rope_kv_cache_write_cpu(const Context& ctx, const RopeParams& p, Tensor& q, Tensor& k,
                                  const Tensor& v, const Tensor& positions, Tensor& k_cache,
                                  Tensor& v_cache, const Tensor& slot_mapping, int64_t seq_len) {
  // Nothing is written before every argument is checked: the write's here, k's rope rules and
  // its agreement with q here too, then q's, k's, positions' and the params' by apply_rope_qk_cpu
  // (which checks them all before rotating).
  check_write_args(k, "k", v, "v", k_cache, v_cache, slot_mapping);
  check_cpu(q, "q");
  check_dim(q, "q", 3);
  check_dtype(q, "q", DType::kFloat32);
  check_dtype(k, "k", DType::kFloat32);
  check_last_dim_contiguous(q, "q");
  FA_CHECK(q.size(0) == k.size(0) && q.size(2) == k.size(2), "q ", q.describe(), " and k ",
           k.describe(), " must have the same number of tokens and head dim");
  // One pass over the tokens: rotate the token's q and k heads (one cos / sin for both), then
  // write its k and v rows to the cache while they are in cache.
  const int32_t* slots = slot_mapping.data_as<const int32_t>();
  const int64_t tmp_floats = std::max(k.size(2), v.size(2));
  auto write = [&](int64_t t) {
    thread_local std::vector<float> tmp;
    if (tmp.size() < static_cast<size_t>(tmp_floats)) tmp.resize(static_cast<size_t>(tmp_floats));
    write_token(k, k_cache, slots, t, tmp.data());
    write_token(v, v_cache, slots, t, tmp.data());
  };
  apply_rope_qk_cpu(ctx, p, q, k, positions, seq_len, write);
}

}  // namespace fastattn::kernels

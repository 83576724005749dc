// Host side of apply_rope, kv_cache_write and rope_kv_cache_write on CUDA: checks shapes, dtypes
// and devices (not index values: those live on the GPU), fills a RopeKvLaunch and enqueues the
// kernel on ctx.stream. The inverse frequencies are rope_inv_freq's (the CPU's, float32 as
// transformers computes them), carried in the launch parameters.
#include <algorithm>
#include <vector>

#include "fastattn/core/cuda/device_guard.h"
#include "fastattn/kernels/cuda/device_props.h"
#include "fastattn/kernels/cuda/launch_checks.h"
#include "fastattn/kernels/cuda/rope_kv_cuda.h"
#include "fastattn/kernels/cuda/rope_kv_launch.h"
#include "fastattn/kernels/kv_cache_write.h"

namespace fastattn::kernels::cuda {
namespace {

int checked_int(int64_t v, const char* what, const Tensor& t, const char* name) {
  FA_CHECK(v <= (int64_t{1} << 30), name, ": ", what, " ", v, " of ", t.describe(),
           " is too large for the CUDA kernel");
  return static_cast<int>(v);
}

// A [T, heads, dim] activation view on ref's GPU.
TokenRows token_rows(const Tensor& t, const char* name, const Tensor& ref, const char* ref_name) {
  check_same_device(t, name, ref, ref_name);
  check_activation_dtype(t, name);
  check_dim(t, name, 3);
  check_last_dim_contiguous(t, name);
  TokenRows r;
  r.data = t.data();
  r.dtype = t.dtype();
  r.token_stride = t.stride(0);
  r.head_stride = t.stride(1);
  r.heads = checked_int(t.size(1), "head count", t, name);
  r.dim = checked_int(t.size(2), "head dim", t, name);
  return r;
}

// A paged cache [num_blocks, block_size, heads, dim] on ref's GPU.
CacheRows cache_rows(const Tensor& t, const char* name, const Tensor& ref, const char* ref_name) {
  check_same_device(t, name, ref, ref_name);
  check_floating(t, name);
  check_dim(t, name, 4);
  check_last_dim_contiguous(t, name);
  CacheRows c;
  c.data = t.data();
  c.dtype = t.dtype();
  c.block_stride = t.stride(0);
  c.slot_stride = t.stride(1);
  c.head_stride = t.stride(2);
  return c;
}

// The rotation part of a launch: positions, style and inverse frequencies for head dim D.
void set_rope(RopeKvLaunch& L, const RopeParams& p, int64_t tokens, int64_t D,
              const Tensor& positions, const Tensor& ref, const char* ref_name, int64_t seq_len) {
  check_same_device(positions, "positions", ref, ref_name);
  FA_CHECK(positions.dtype() == DType::kInt32 || positions.dtype() == DType::kInt64,
           "positions: expected int32 or int64, got ", positions.describe());
  check_shape(positions, "positions", {tokens});
  check_contiguous(positions, "positions");
  FA_CHECK(seq_len >= 0, "rope: seq_len must be >= 0 (0 = max(positions) + 1), got ", seq_len);
  FA_CHECK(p.scaling != RopeScaling::kDynamicNTK || seq_len > 0,
           "rope: dynamic NTK scaling on CUDA needs seq_len > 0 (the sequence length, max "
           "position + 1): the host does not read positions back from the GPU");
  FA_CHECK(D <= (int64_t{1} << 30), ref_name, ": head_dim ", D, " is too large");
  const std::vector<float> inv = rope_inv_freq(p, static_cast<int>(D), seq_len);
  FA_CHECK(inv.size() <= static_cast<size_t>(kRopeMaxPairs),
           "rope: the CUDA kernel rotates at most ", 2 * kRopeMaxPairs,
           " dims per head, got rotary_dim ", 2 * inv.size());
  std::copy(inv.begin(), inv.end(), L.inv_freq);
  L.pairs = static_cast<int>(inv.size());
  L.neox = p.style == RopeStyle::kNeox;
  L.positions = positions.data();
  L.positions_int64 = positions.dtype() == DType::kInt64;
}

// The cache-write part of a launch (K and V views given, names as in the public call).
void set_cache(RopeKvLaunch& L, const Tensor& k_new, const char* k_name, const Tensor& v_new,
               const char* v_name, const Tensor& k_cache, const Tensor& v_cache,
               const Tensor& slot_mapping) {
  L.k_cache = cache_rows(k_cache, "k_cache", k_new, k_name);
  L.v_cache = cache_rows(v_cache, "v_cache", k_new, k_name);
  check_same_device(slot_mapping, "slot_mapping", k_new, k_name);
  check_kv_write_shapes(k_new, v_new, v_name, k_cache, v_cache, slot_mapping);
  const int64_t num_blocks = k_cache.size(0), block_size = k_cache.size(1);
  L.write_cache = true;
  L.block_size = std::max<int64_t>(block_size, 1);
  L.num_slots = num_blocks * block_size;
  L.slots = slot_mapping.data_as<const int32_t>();
}

void launch(const Context& ctx, RopeKvLaunch& L, const Tensor& ref) {
  int widest = 1;
  for (int i = 0; i < L.num_rotated; ++i) widest = std::max(widest, L.rotated[i].dim);
  if (L.write_cache) widest = std::max({widest, L.k_src.dim, L.v_src.dim});
  const int64_t rows = (L.num_rotated > 0 ? L.rotated[0].heads : 0) +
                       (L.num_rotated > 1 ? L.rotated[1].heads : 0) +
                       (L.write_cache && !L.k_from_rotated ? L.k_src.heads : 0) +
                       (L.write_cache ? L.v_src.heads : 0);
  // About 1024 elements per block, enough work per thread for prefill. But a block handles its
  // rows one after another (each a dependent load -> rotate -> store), so with few tokens (decode)
  // the rows are spread over up to two blocks per SM instead: one token of a 7B model took 9.2 us
  // with 8 rows per block on the H100 (docs/results/decode_step_profile_h100_2026-12-07.md).
  const int64_t sms = device_props(ref.device().index).sms;
  const int64_t rows_for_two_blocks_per_sm = L.tokens * rows / (2 * sms);
  L.rows_per_block = static_cast<int>(
      std::clamp<int64_t>(std::min<int64_t>(1024 / widest, rows_for_two_blocks_per_sm), 1, 16));
  FA_CHECK(L.tokens <= 0x7fffffff, "rope / kv cache write: ", L.tokens,
           " tokens exceed the CUDA grid limit");
  FA_CHECK((rows + L.rows_per_block - 1) / L.rows_per_block <= 65535,
           "rope / kv cache write: ", rows, " head rows per token exceed the CUDA grid limit");
  if (L.tokens == 0 || rows == 0) return;
  const DeviceGuard guard(ref.device().index);
  launch_rope_kv(L, stream_of(ctx));
}

}  // namespace

void apply_rope_cuda(const Context& ctx, const RopeParams& p, Tensor& x, const Tensor& positions,
                     int64_t seq_len) {
  RopeKvLaunch L;
  L.rotated[0] = token_rows(x, "x", x, "x");
  L.num_rotated = 1;
  L.tokens = x.size(0);
  set_rope(L, p, x.size(0), x.size(2), positions, x, "x", seq_len);
  launch(ctx, L, x);
}

void kv_cache_write_cuda(const Context& ctx, const Tensor& k_new, const Tensor& v_new,
                         Tensor& k_cache, Tensor& v_cache, const Tensor& slot_mapping) {
  RopeKvLaunch L;
  L.k_src = token_rows(k_new, "k_new", k_new, "k_new");
  L.v_src = token_rows(v_new, "v_new", k_new, "k_new");
  L.tokens = k_new.size(0);
  set_cache(L, k_new, "k_new", v_new, "v_new", k_cache, v_cache, slot_mapping);
  launch(ctx, L, k_new);
}

void rope_kv_cache_write_cuda(const Context& ctx, const RopeParams& p, Tensor& q, Tensor& k,
                              const Tensor& v, const Tensor& positions, Tensor& k_cache,
                              Tensor& v_cache, const Tensor& slot_mapping, int64_t seq_len) {
  RopeKvLaunch L;
  L.rotated[0] = token_rows(q, "q", q, "q");
  L.rotated[1] = token_rows(k, "k", q, "q");
  L.num_rotated = 2;
  L.k_src = L.rotated[1];
  L.v_src = token_rows(v, "v", q, "q");
  FA_CHECK(q.size(0) == k.size(0) && q.size(2) == k.size(2), "q ", q.describe(), " and k ",
           k.describe(), " must have the same number of tokens and head dim");
  L.tokens = q.size(0);
  set_cache(L, k, "k", v, "v", k_cache, v_cache, slot_mapping);
  L.k_from_rotated = true;
  set_rope(L, p, q.size(0), q.size(2), positions, q, "q", seq_len);
  launch(ctx, L, q);
}

}  // namespace fastattn::kernels::cuda

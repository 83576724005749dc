// fmha_forward: checks every tensor of FmhaParams (dtype, rank, shape, offsets, indices, and the
// alignment the CUDA kernels need) with a message that names the one at fault, asks the
// dispatcher (attention_dispatch.h) which kernel runs, and runs it. The kernels themselves
// re-check nothing.
#include "fastattn/kernels/attention/fmha.h"

#include <cmath>
#include <cstdint>
#include <string>

#include "fastattn/kernels/attention/attention_dispatch.h"
#include "fastattn/kernels/cpu/fmha_cpu.h"
#if defined(FASTATTN_WITH_CUDA)
#include "fastattn/kernels/cuda/attention/attention_device_cuda.h"
#include "fastattn/kernels/cuda/attention/decode/decode_cuda.h"
#include "fastattn/kernels/cuda/attention/fmha/fmha_cuda.h"
#endif

namespace fastattn::kernels {
namespace {

constexpr int64_t kMaxHeadDim = 256;

void check_defined(const Tensor& t, const char* name) {
  FA_CHECK(t.defined(), name, ": expected a tensor, got an undefined (empty) one");
}

void check_rows_contiguous(const Tensor& t, const char* name) {
  FA_CHECK(t.last_dim_contiguous(), name,
           ": the last (head dim) dimension must be contiguous (stride 1), got strides ",
           shape_str(t.strides()), " for ", t.describe());
}

void check_index_vector(const Tensor& t, const char* name, int64_t entries) {
  check_dtype(t, name, DType::kInt32);
  check_dim(t, name, 1);
  check_size(t, name, 0, entries);
  check_contiguous(t, name);
}

void check_not_given(const Tensor& t, const char* name, const char* why) {
  FA_CHECK(!t.defined(), name, ": must not be given ", why);
}

// cu_seqlens: starts at 0, never decreases, ends at the number of rows of `rows_of`.
void check_cu_seqlens_values(const Tensor& cu, const char* name, int64_t rows,
                             const char* rows_of) {
  const int32_t* c = cu.data_as<int32_t>();
  const int64_t n = cu.size(0);
  FA_CHECK(c[0] == 0, name, ": first entry ", c[0], " != 0");
  for (int64_t i = 1; i < n; ++i) {
    FA_CHECK(c[i] >= c[i - 1], name, ": entries must not decrease, but entry ", i, " (", c[i],
             ") < entry ", i - 1, " (", c[i - 1], ")");
  }
  FA_CHECK(c[n - 1] == rows, name, ": last entry ", c[n - 1], " != ", rows_of, " rows ", rows);
}

void check_paged_values(const FmhaParams& p, int64_t batch, int64_t num_blocks,
                        int64_t block_size) {
  const int32_t* seqlens = p.seqlens_k.data_as<int32_t>();
  const int32_t* table = p.block_table.data_as<int32_t>();
  const int64_t max_blocks = p.block_table.size(1);
  const int64_t row_stride = p.block_table.stride(0);
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t len = seqlens[b];
    FA_CHECK(len >= 0, "seqlens_k[", b, "] = ", len, " is negative");
    FA_CHECK(len <= max_blocks * block_size, "seqlens_k[", b, "] = ", len,
             " exceeds the block table capacity of ", max_blocks, " blocks x ", block_size, " = ",
             max_blocks * block_size, " keys");
    const int64_t used = (len + block_size - 1) / block_size;
    for (int64_t i = 0; i < used; ++i) {
      const int64_t blk = table[b * row_stride + i];
      FA_CHECK(blk >= 0 && blk < num_blocks, "block_table[", b, "][", i, "] = ", blk,
               " is out of range: k / v hold ", num_blocks, " blocks");
    }
  }
}

// Structure checks (no memory reads); returns the derived shapes.
FmhaShape check_structure(const FmhaParams& p) {
  check_defined(p.q, "q");
  check_defined(p.k, "k");
  check_defined(p.v, "v");
  check_defined(p.out, "out");
  check_defined(p.cu_seqlens_q, "cu_seqlens_q");

  check_dim(p.q, "q", 3);
  check_floating(p.q, "q");
  check_rows_contiguous(p.q, "q");
  check_dim(p.out, "out", 3);
  check_floating(p.out, "out");
  check_shape(p.out, "out", p.q.shape());
  check_rows_contiguous(p.out, "out");

  check_floating(p.k, "k");
  FA_CHECK(p.k.dim() == 3 || p.k.dim() == 4, "k: expected 3 dimensions [total_k, Hk, D] or 4 ",
           "[num_blocks, block_size, Hk, D] (paged), got ", p.k.describe());
  check_same_dtype(p.k, "k", p.v, "v");
  FA_CHECK(p.v.shape() == p.k.shape(), "v: expected the shape of k ", shape_str(p.k.shape()),
           ", got ", p.v.describe());
  check_rows_contiguous(p.k, "k");
  check_rows_contiguous(p.v, "v");

  FmhaShape sh;
  const int64_t d = p.q.size(2);
  FA_CHECK(p.k.size(-1) == d && p.v.size(-1) == d, "head dims of q (", d, "), k (", p.k.size(-1),
           ") and v (", p.v.size(-1), ") differ");
  FA_CHECK(d >= 1 && d <= kMaxHeadDim, "q: head dim ", d, " is unsupported (supported: 1..",
           kMaxHeadDim, ")");
  const int64_t hq = p.q.size(1), hk = p.k.size(-2);
  FA_CHECK(hq >= 1 && hk >= 1, "q has ", hq, " heads and k ", hk, ": both need at least one");
  FA_CHECK(hq % hk == 0, "q has ", hq, " heads, not a multiple of the ", hk, " KV heads of k");
  sh.num_heads_q = static_cast<int>(hq);
  sh.num_heads_k = static_cast<int>(hk);
  sh.head_dim = static_cast<int>(d);
  sh.total_q = p.q.size(0);

  check_dtype(p.cu_seqlens_q, "cu_seqlens_q", DType::kInt32);
  check_dim(p.cu_seqlens_q, "cu_seqlens_q", 1);
  check_contiguous(p.cu_seqlens_q, "cu_seqlens_q");
  FA_CHECK(p.cu_seqlens_q.size(0) >= 1, "cu_seqlens_q: expected batch + 1 >= 1 entries, got ",
           p.cu_seqlens_q.describe());
  sh.batch = p.cu_seqlens_q.size(0) - 1;

  sh.paged = p.k.dim() == 4;
  if (sh.paged) {
    check_not_given(p.cu_seqlens_k, "cu_seqlens_k", "with paged k / v (use seqlens_k)");
    check_defined(p.block_table, "block_table");
    check_defined(p.seqlens_k, "seqlens_k");
    check_dtype(p.block_table, "block_table", DType::kInt32);
    check_dim(p.block_table, "block_table", 2);
    check_size(p.block_table, "block_table", 0, sh.batch);
    check_rows_contiguous(p.block_table, "block_table");
    check_index_vector(p.seqlens_k, "seqlens_k", sh.batch);
    sh.block_size = p.k.size(1);
    FA_CHECK(sh.block_size >= 1, "k: paged block size must be >= 1, got ", p.k.describe());
  } else {
    check_not_given(p.block_table, "block_table", "with contiguous k / v [total_k, Hk, D]");
    check_not_given(p.seqlens_k, "seqlens_k", "with contiguous k / v (use cu_seqlens_k)");
    check_defined(p.cu_seqlens_k, "cu_seqlens_k");
    check_index_vector(p.cu_seqlens_k, "cu_seqlens_k", sh.batch + 1);
  }

  if (p.lse.defined()) {
    check_dtype(p.lse, "lse", DType::kFloat32);
    check_shape(p.lse, "lse", {hq, sh.total_q});
  }
  if (p.alibi_slopes.defined()) {
    check_dtype(p.alibi_slopes, "alibi_slopes", DType::kFloat32);
    FA_CHECK((p.alibi_slopes.dim() == 1 && p.alibi_slopes.size(0) == hq) ||
                 (p.alibi_slopes.dim() == 2 && p.alibi_slopes.size(0) == sh.batch &&
                  p.alibi_slopes.size(1) == hq),
             "alibi_slopes: expected shape [", hq, "] or [", sh.batch, ", ", hq, "], got ",
             p.alibi_slopes.describe());
  }
  FA_CHECK(std::isfinite(p.softmax_scale) && p.softmax_scale >= 0.0f,
           "softmax_scale: expected a finite value >= 0 (0 = 1 / sqrt(head dim)), got ",
           p.softmax_scale);
  FA_CHECK(p.window_left >= -1, "window_left: expected >= -1 (-1 = unbounded), got ",
           p.window_left);
  FA_CHECK(p.window_right >= -1, "window_right: expected >= -1 (-1 = unbounded), got ",
           p.window_right);

  return sh;
}

// Every tensor must live where q lives: all CPU-addressable (the CPU kernel), or all on q's GPU
// (the CUDA kernels). Returns true for the GPU.
bool check_devices(const FmhaParams& p) {
  const std::pair<const Tensor*, const char*> all[] = {{&p.q, "q"},
                                                       {&p.k, "k"},
                                                       {&p.v, "v"},
                                                       {&p.out, "out"},
                                                       {&p.lse, "lse"},
                                                       {&p.cu_seqlens_q, "cu_seqlens_q"},
                                                       {&p.cu_seqlens_k, "cu_seqlens_k"},
                                                       {&p.block_table, "block_table"},
                                                       {&p.seqlens_k, "seqlens_k"},
                                                       {&p.alibi_slopes, "alibi_slopes"}};
  const bool on_gpu = p.q.defined() && !p.q.device().is_cpu_addressable();
#if !defined(FASTATTN_WITH_CUDA)
  for (const auto& [t, name] : all) {
    if (t->defined() && !t->device().is_cpu_addressable()) {
      FA_THROW_AS(Error, "fmha_forward: ", name, " is on ", t->device().str(),
                  " but FastAttention was not built with CUDA (CPU tensors only)");
    }
  }
#endif
  for (const auto& [t, name] : all) {
    if (!t->defined()) continue;
    const bool ok = on_gpu ? t->device() == p.q.device() : t->device().is_cpu_addressable();
    FA_CHECK(ok, name, " is on ", t->device().str(), " but q is on ", p.q.device().str(),
             ": every tensor of one attention call must be on the same device");
  }
  return on_gpu;
}

AttentionProblem problem_of(const FmhaParams& p, const FmhaShape& sh) {
  AttentionProblem pr;
  pr.shape = sh;
  pr.shape.max_seqlen_q = p.max_seqlen_q;
  pr.q_dtype = p.q.dtype();
  pr.kv_dtype = p.k.dtype();
  pr.out_dtype = p.out.dtype();
  return pr;
}

#if defined(FASTATTN_WITH_CUDA)
// What every CUDA kernel needs beyond check_structure. The index tensors live in GPU memory:
// their values are not checked (as in FlashAttention); the shapes are.
void check_cuda_common(const FmhaParams& p) {
  FA_CHECK(p.max_seqlen_q >= 0, "max_seqlen_q: expected >= 0 (0 = unknown), got ", p.max_seqlen_q);
  // Every CUDA kernel reads lse with unit token stride and alibi_slopes with unit head stride.
  if (p.lse.defined()) {
    FA_CHECK(p.lse.size(1) <= 1 || p.lse.stride(1) == 1,
             "lse: the CUDA kernels need the token dim contiguous (stride 1), got strides ",
             shape_str(p.lse.strides()));
  }
  if (p.alibi_slopes.defined()) {
    FA_CHECK(p.alibi_slopes.last_dim_contiguous(),
             "alibi_slopes: the CUDA kernels need the head dim contiguous, got strides ",
             shape_str(p.alibi_slopes.strides()));
  }
}

// The FlashAttention-2 kernels load 16-byte vectors of 8 fp16 / bf16 elements from every row.
void check_fmha_aligned(const Tensor& t, const char* name) {
  const auto addr = reinterpret_cast<uintptr_t>(t.data());
  FA_CHECK(addr % 16 == 0, name, ": the CUDA kernels need 16-byte aligned data, got address ", addr,
           " (make the tensor contiguous or slice on 8-element boundaries)");
  FA_CHECK(t.stride(0) % 8 == 0 && t.stride(-2) % 8 == 0, name,
           ": the CUDA kernels need token and head strides that are multiples of 8 elements, got ",
           shape_str(t.strides()));
}

// The decode kernel loads 16-byte vectors from every row (a dim of size 1 has no second row).
void check_decode_aligned(const Tensor& t, const char* name) {
  const auto addr = reinterpret_cast<uintptr_t>(t.data());
  const int64_t elem = static_cast<int64_t>(dtype_size(t.dtype()));
  bool ok = addr % 16 == 0;
  for (int i = 0; i + 1 < t.dim(); ++i) ok = ok && (t.size(i) == 1 || t.stride(i) * elem % 16 == 0);
  FA_CHECK(ok, name, ": the CUDA decode kernel needs 16-byte aligned rows (data address and every ",
           "stride but the last a multiple of 16 bytes), got address ", addr, " and strides ",
           shape_str(t.strides()), " for ", t.describe());
}

void check_cuda_aligned(const FmhaParams& p, AttentionKernel kernel) {
  const auto check = is_fmha_kernel(kernel) ? check_fmha_aligned : check_decode_aligned;
  check(p.q, "q");
  check(p.k, "k");
  check(p.v, "v");
  check(p.out, "out");
}

void fmha_forward_gpu(const Context& ctx, const FmhaParams& p, const FmhaShape& sh,
                      AttentionImpl impl) {
  check_cuda_common(p);
  const AttentionDevice device = cuda::attention_device(p.q.device().index);
  AttentionProblem problem = problem_of(p, sh);
  if (problem.shape.max_seqlen_q == 0 && needs_max_seqlen_q(problem, impl, device)) {
    problem.shape.max_seqlen_q = cuda::device_max_seqlen(ctx, p.cu_seqlens_q, true);
    if (problem.shape.max_seqlen_q == 0) return;  // no query rows
  }
  const AttentionChoice choice = choose_attention_kernel(problem, impl, device);
  FA_CHECK(choice.kernel != AttentionKernel::kNone, choice.reason);
  check_cuda_aligned(p, choice.kernel);
  if (is_decode_kernel(choice.kernel)) {
    cuda::decode_forward_cuda(ctx, p, problem.shape, choice.kernel);
  } else {
    cuda::fmha_forward_cuda(ctx, p, problem.shape, choice.kernel);
  }
}
#endif

}  // namespace

void fmha_forward(const Context& ctx, const FmhaParams& p) {
  const bool on_gpu = check_devices(p);
  const FmhaShape sh = check_structure(p);
  FA_CHECK(p.num_splits >= 0 && p.num_splits <= kMaxNumSplits,
           "num_splits: expected 0 (heuristic) to ", kMaxNumSplits, ", got ", p.num_splits);
  FA_CHECK(p.max_seqlen_k >= 0, "max_seqlen_k: expected >= 0 (0 = unknown), got ", p.max_seqlen_k);
  const AttentionImpl impl = parse_attention_impl(p.impl);
  if (on_gpu) {
#if defined(FASTATTN_WITH_CUDA)
    fmha_forward_gpu(ctx, p, sh, impl);
    return;
#endif
  }
  const AttentionChoice choice =
      choose_attention_kernel(problem_of(p, sh), impl, AttentionDevice{});
  FA_CHECK(choice.kernel == AttentionKernel::kCpu, choice.reason);
  check_cu_seqlens_values(p.cu_seqlens_q, "cu_seqlens_q", sh.total_q, "q");
  if (sh.paged) {
    check_paged_values(p, sh.batch, p.k.size(0), sh.block_size);
  } else {
    check_cu_seqlens_values(p.cu_seqlens_k, "cu_seqlens_k", p.k.size(0), "k");
  }
  cpu::fmha_forward_cpu(ctx, p, sh);
}

}  // namespace fastattn::kernels

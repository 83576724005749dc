// choose_attention_kernel and the names of the kernels and impl values (attention_dispatch.h).
#include "fastattn/kernels/attention/attention_dispatch.h"

#include <cstdint>
#include <utility>

#include "fastattn/core/error.h"

namespace fastattn::kernels {
namespace {

struct ImplName {
  const char* name;
  AttentionImpl impl;
};
constexpr ImplName kImplNames[] = {
    {"auto", AttentionImpl::kAuto},
    {"884", AttentionImpl::kFmha884},
    {"884-plain", AttentionImpl::kFmha884Plain},
    {"1688", AttentionImpl::kFmha1688},
    {"16816", AttentionImpl::kFmha16816},
    {"decode", AttentionImpl::kDecode},
    {"decode-async", AttentionImpl::kDecodeAsync},
    {"decode-regstage", AttentionImpl::kDecodeRegStaged},
};

const char* impl_name(AttentionImpl impl) {
  for (const ImplName& n : kImplNames) {
    if (n.impl == impl) return n.name;
  }
  return "?";
}

struct KernelName {
  const char* name;
  AttentionKernel kernel;
};
constexpr KernelName kKernelNames[] = {
    {"none", AttentionKernel::kNone},
    {"cpu", AttentionKernel::kCpu},
    {"884", AttentionKernel::kFmha884},
    {"884-plain", AttentionKernel::kFmha884Plain},
    {"1688", AttentionKernel::kFmha1688},
    {"16816", AttentionKernel::kFmha16816},
    {"decode-async", AttentionKernel::kDecodeAsync},
    {"decode-regstage", AttentionKernel::kDecodeRegStaged},
};

// The newest MMA path first: "auto" takes the first that has a runnable instance.
constexpr AttentionKernel kFmhaPreference[] = {
    AttentionKernel::kFmha16816, AttentionKernel::kFmha1688, AttentionKernel::kFmha884};

// The decode kernel's grid has the batch as its z dimension, at most 65535 CTAs.
constexpr int64_t kDecodeMaxBatch = 65535;

using detail::concat;

AttentionChoice none(std::string reason) {
  return AttentionChoice{AttentionKernel::kNone, std::move(reason)};
}

bool one_dtype(const AttentionProblem& p) {
  return p.q_dtype == p.kv_dtype && p.q_dtype == p.out_dtype;
}

std::string dtypes_str(const AttentionProblem& p) {
  return concat("q ", dtype_name(p.q_dtype), ", k / v ", dtype_name(p.kv_dtype), ", out ",
                dtype_name(p.out_dtype));
}

std::string no_instance(AttentionKernel kernel, const AttentionProblem& p,
                        const AttentionDevice& d) {
  return concat("no CUDA instance of kernel ", attention_kernel_name(kernel), " for head dim ",
                p.shape.head_dim, ", dtype ", dtype_name(p.q_dtype), " runs on sm_", d.cc,
                " in this build (fastattention._C.fmha_cuda_instances() lists the compiled ones ",
                "and the archs each runs on; configure with FASTATTN_CUDA_ARCHS / ",
                "FASTATTN_CUDA_HEAD_DIMS to add it)");
}

// Whether a FlashAttention-2 kernel can run the call: the kernel, or kNone and why.
AttentionChoice check_fmha(AttentionKernel kernel, const AttentionProblem& p,
                           const AttentionDevice& d) {
  if (p.shape.paged) {
    return none(concat("k: paged KV caches are not supported by the CUDA FlashAttention-2 kernel ",
                       "(impl ", attention_kernel_name(kernel), "); use impl 'auto' or 'decode'"));
  }
  if (!one_dtype(p)) {
    return none(concat("the CUDA kernels need q, k, v and out of one dtype, got ", dtypes_str(p)));
  }
  if (p.q_dtype != DType::kFloat16 && p.q_dtype != DType::kBFloat16) {
    return none(concat("q: the CUDA FlashAttention-2 kernels take float16 or bfloat16, got dtype ",
                       dtype_name(p.q_dtype), " (impl 'auto' or 'decode' runs float32)"));
  }
  if (!d.runnable(kernel, p.q_dtype, p.shape.head_dim)) return none(no_instance(kernel, p, d));
  return AttentionChoice{kernel, {}};
}

// Whether a split-KV decode kernel can run the call.
AttentionChoice check_decode(AttentionKernel kernel, const AttentionProblem& p,
                             const AttentionDevice& d) {
  const FmhaShape& s = p.shape;
  if (!one_dtype(p)) {
    return none(
        concat("the CUDA decode kernel needs q, k, v and out of one dtype, got ", dtypes_str(p)));
  }
  if (s.batch > kDecodeMaxBatch) {
    return none(
        concat("the CUDA decode kernel takes batch <= ", kDecodeMaxBatch, ", got ", s.batch));
  }
  if (s.paged && s.block_size > INT32_MAX / 2) {
    return none(
        concat("k: paged block size ", s.block_size, " is too large for the CUDA decode kernel"));
  }
  if (!d.runnable(kernel, p.q_dtype, s.head_dim)) return none(no_instance(kernel, p, d));
  return AttentionChoice{kernel, {}};
}

AttentionChoice choose_auto_gpu(const AttentionProblem& p, const AttentionDevice& d) {
  const FmhaShape& s = p.shape;
  const AttentionKernel decode = preferred_decode_kernel(d, p.q_dtype, s.head_dim);
  if (s.paged || p.q_dtype == DType::kFloat32) return check_decode(decode, p, d);
  FA_ASSERT(s.max_seqlen_q > 0, "max_seqlen_q unknown (see needs_max_seqlen_q)");
  if (d.runnable(decode, p.q_dtype, s.head_dim) &&
      decode_like(s.max_seqlen_q, s.num_heads_q / s.num_heads_k)) {
    return check_decode(decode, p, d);
  }
  for (const AttentionKernel k : kFmhaPreference) {
    if (d.runnable(k, p.q_dtype, s.head_dim)) return check_fmha(k, p, d);
  }
  return check_fmha(kFmhaPreference[0], p, d);  // none runs: says why
}

}  // namespace

const char* attention_kernel_name(AttentionKernel kernel) {
  for (const KernelName& n : kKernelNames) {
    if (n.kernel == kernel) return n.name;
  }
  return "?";
}

bool is_fmha_kernel(AttentionKernel kernel) {
  return kernel == AttentionKernel::kFmha884 || kernel == AttentionKernel::kFmha884Plain ||
         kernel == AttentionKernel::kFmha1688 || kernel == AttentionKernel::kFmha16816;
}

bool is_decode_kernel(AttentionKernel kernel) {
  return kernel == AttentionKernel::kDecodeAsync || kernel == AttentionKernel::kDecodeRegStaged;
}

AttentionImpl parse_attention_impl(const std::string& impl) {
  for (const ImplName& n : kImplNames) {
    if (impl == n.name) return n.impl;
  }
  FA_THROW_AS(
      InvalidArgument, "impl: '", impl,
      "' is not one of auto, 884, 884-plain, 1688, 16816, decode, decode-async, decode-regstage");
}

bool decode_like(int max_seqlen_q, int group) {
  constexpr int kMaxQueries = 16, kMaxRows = 32;
  return max_seqlen_q <= kMaxQueries && static_cast<int64_t>(max_seqlen_q) * group <= kMaxRows;
}

AttentionKernel preferred_decode_kernel(const AttentionDevice& device, DType dtype, int head_dim) {
  // Register staging measured faster than cp.async on sm_90 (H100: 85% vs 78% of DRAM peak at
  // batch 8, KV 8K; docs/results/bench_decode_h100_2026-11-22.md); sm_80..89 keep cp.async
  // (not measured here).
  if (device.cc < 90 && device.runnable(AttentionKernel::kDecodeAsync, dtype, head_dim)) {
    return AttentionKernel::kDecodeAsync;
  }
  return AttentionKernel::kDecodeRegStaged;
}

bool needs_max_seqlen_q(const AttentionProblem& problem, AttentionImpl impl,
                        const AttentionDevice& device) {
  return device.gpu && impl == AttentionImpl::kAuto && !problem.shape.paged &&
         (problem.q_dtype == DType::kFloat16 || problem.q_dtype == DType::kBFloat16);
}

AttentionChoice choose_attention_kernel(const AttentionProblem& problem, AttentionImpl impl,
                                        const AttentionDevice& device) {
  if (!device.gpu) {
    if (impl != AttentionImpl::kAuto) {
      return none(concat("impl: '", impl_name(impl),
                         "' selects a CUDA kernel, but the tensors are on the CPU"));
    }
    return AttentionChoice{AttentionKernel::kCpu, {}};
  }
  switch (impl) {
    case AttentionImpl::kAuto:
      return choose_auto_gpu(problem, device);
    case AttentionImpl::kFmha884:
      return check_fmha(AttentionKernel::kFmha884, problem, device);
    case AttentionImpl::kFmha884Plain:
      return check_fmha(AttentionKernel::kFmha884Plain, problem, device);
    case AttentionImpl::kFmha1688:
      return check_fmha(AttentionKernel::kFmha1688, problem, device);
    case AttentionImpl::kFmha16816:
      return check_fmha(AttentionKernel::kFmha16816, problem, device);
    case AttentionImpl::kDecode: {
      const AttentionKernel preferred =
          preferred_decode_kernel(device, problem.q_dtype, problem.shape.head_dim);
      return check_decode(preferred, problem, device);
    }
    case AttentionImpl::kDecodeAsync:
      return check_decode(AttentionKernel::kDecodeAsync, problem, device);
    case AttentionImpl::kDecodeRegStaged:
      return check_decode(AttentionKernel::kDecodeRegStaged, problem, device);
  }
  return none(concat("impl: unknown value ", static_cast<int>(impl)));
}

}  // namespace fastattn::kernels

// Host side of the CUDA forward: FmhaParams -> FmhaDeviceParams, instance lookup, launch.
#include <cmath>
#include <string>
#include <vector>

#include "fastattn/core/cuda/device_guard.h"
#include "fastattn/kernels/attention/softmax_params.h"
#include "fastattn/core/cuda/cuda_check.h"
#include "fastattn/kernels/cuda/decode_cuda.h"
#include "fastattn/kernels/cuda/device_props.h"
#include "fastattn/kernels/cuda/fmha_cuda.h"
#include "fastattn/kernels/cuda/fmha_registry.h"

namespace fastattn::kernels::cuda {
namespace {

MmaImpl native_impl(int cc) {
  if (cc >= 80) return MmaImpl::k16816;
  if (cc >= 75) return MmaImpl::k1688;
  return MmaImpl::k884;
}

int min_cc(MmaImpl impl) {
  switch (impl) {
    case MmaImpl::k16816:
      return 80;
    case MmaImpl::k1688:
      return 75;
    default:
      return 70;
  }
}

void check_aligned(const Tensor& t, const char* name) {
  const auto addr = reinterpret_cast<uintptr_t>(t.data());
  FA_CHECK(addr % 16 == 0, name, ": the CUDA kernels need 16-byte aligned data, got address ",
           addr, " (make the tensor contiguous or slice on 8-element boundaries)");
  FA_CHECK(t.stride(0) % 8 == 0 && t.stride(-2) % 8 == 0, name,
           ": the CUDA kernels need token and head strides that are multiples of 8 elements, got ",
           shape_str(t.strides()));
}

}  // namespace

MmaImpl parse_mma_impl(const std::string& name) {
  if (name == "auto") return MmaImpl::kAuto;
  if (name == "884") return MmaImpl::k884;
  if (name == "1688") return MmaImpl::k1688;
  if (name == "16816") return MmaImpl::k16816;
  if (name == "884-plain") return MmaImpl::k884Plain;
  FA_THROW_AS(InvalidArgument, "impl: '", name, "' is not one of auto, 884, 1688, 16816, 884-plain");
}

const char* mma_impl_name(MmaImpl impl) {
  switch (impl) {
    case MmaImpl::k884:
      return "884";
    case MmaImpl::k1688:
      return "1688";
    case MmaImpl::k16816:
      return "16816";
    case MmaImpl::k884Plain:
      return "884-plain";
    default:
      return "auto";
  }
}

std::vector<std::string> fmha_cuda_instances() {
  int n = 0;
  const FmhaInstance* table = fmha_instance_table(&n);
  std::vector<std::string> out;
  for (int i = 0; i < n; ++i) {
    out.push_back(std::string(mma_impl_name(table[i].impl)) + "/hd" +
                  std::to_string(table[i].head_dim) + "/" + dtype_name(table[i].dtype) +
                  " (sm " + table[i].archs + ")");
  }
  return out;
}

void fmha_forward_cuda(const Context& ctx, const FmhaParams& p, const FmhaShape& shape,
                       MmaImpl impl) {
  FA_CHECK(p.k.dim() == 3, "k: paged KV caches are not supported by the CUDA prefill kernel yet; ",
           "got ", p.k.describe());
  FA_CHECK(p.q.dtype() == p.k.dtype() && p.q.dtype() == p.out.dtype(),
           "the CUDA kernels need q, k, v and out of one dtype, got q ", p.q.describe(), ", k ",
           p.k.describe(), ", out ", p.out.describe());
  FA_CHECK(p.q.dtype() == DType::kFloat16 || p.q.dtype() == DType::kBFloat16,
           "q: the CUDA kernels take float16 or bfloat16, got ", p.q.describe());
  check_aligned(p.q, "q");
  check_aligned(p.k, "k");
  check_aligned(p.v, "v");
  check_aligned(p.out, "out");

  const int dev = p.q.device().index;
  const DeviceGuard guard(dev);
  const int cc = device_props(dev).cc;
  const MmaImpl chosen = impl == MmaImpl::kAuto ? native_impl(cc) : impl;
  FA_CHECK(cc >= min_cc(chosen), "impl ", mma_impl_name(chosen), " needs sm_", min_cc(chosen),
           " or newer; device ", dev, " is sm_", cc);

  int n = 0;
  const FmhaInstance* table = fmha_instance_table(&n);
  const FmhaInstance* inst = nullptr;
  for (int i = 0; i < n; ++i) {
    if (table[i].impl == chosen && table[i].head_dim == shape.head_dim &&
        table[i].dtype == p.q.dtype()) {
      inst = &table[i];
    }
  }
  FA_CHECK(inst != nullptr, "no FastAttention CUDA instance for impl ", mma_impl_name(chosen),
           ", head dim ", shape.head_dim, ", dtype ", dtype_name(p.q.dtype()),
           " in this build (configure with FASTATTN_CUDA_ARCHS / FASTATTN_CUDA_HEAD_DIMS to add it)");

  FmhaDeviceParams d{};
  d.q = p.q.data();
  d.k = p.k.data();
  d.v = p.v.data();
  d.out = p.out.data();
  d.lse = p.lse.defined() ? p.lse.data_as<float>() : nullptr;
  d.q_row_stride = p.q.stride(0);
  d.q_head_stride = p.q.stride(1);
  d.k_row_stride = p.k.stride(0);
  d.k_head_stride = p.k.stride(1);
  d.v_row_stride = p.v.stride(0);
  d.v_head_stride = p.v.stride(1);
  d.o_row_stride = p.out.stride(0);
  d.o_head_stride = p.out.stride(1);
  d.lse_head_stride = p.lse.defined() ? p.lse.stride(0) : 0;
  d.cu_seqlens_q = p.cu_seqlens_q.data_as<int32_t>();
  d.cu_seqlens_k = p.cu_seqlens_k.data_as<int32_t>();
  d.batch = static_cast<int>(shape.batch);
  d.num_heads_q = shape.num_heads_q;
  d.num_heads_k = shape.num_heads_k;
  d.head_dim = shape.head_dim;
  d.max_seqlen_q = p.max_seqlen_q;
  if (d.max_seqlen_q <= 0) {  // derive it: one small copy, ordered after the work on ctx.stream
    d.max_seqlen_q = device_max_seqlen(ctx, p.cu_seqlens_q, true);
  }
  const float scale = softmax_scale_or_default(p.softmax_scale, shape.head_dim);
  d.softmax_scale = scale;
  d.scale_log2 = scale * kLog2e;
  d.window_left = p.window_left;
  d.window_right = causal_window_right(p.causal, p.window_right);
  d.alibi_slopes = p.alibi_slopes.defined() ? p.alibi_slopes.data_as<float>() : nullptr;
  d.alibi_batch_stride = p.alibi_slopes.defined() && p.alibi_slopes.dim() == 2 ? static_cast<int>(p.alibi_slopes.stride(0)) : 0;
  if (d.max_seqlen_q == 0 || shape.batch == 0) return;
  inst->launch(d, static_cast<cudaStream_t>(ctx.stream));
}

}  // namespace fastattn::kernels::cuda

// Host side of the CUDA forward: the instance of the chosen kernel, FmhaParams ->
// FmhaDeviceParams, launch. Argument checks and the kernel choice are fmha.cc's and
// attention_dispatch.cc's.
#include <string>
#include <vector>

#include "fastattn/core/cuda/device_guard.h"
#include "fastattn/kernels/attention/fmha_softmax.h"
#include "fastattn/kernels/cuda/attention/attention_registry.h"
#include "fastattn/kernels/cuda/attention/decode/decode_cuda.h"
#include "fastattn/kernels/cuda/attention/fmha/fmha_cuda.h"
#include "fastattn/kernels/cuda/device_props.h"

namespace fastattn::kernels::cuda {

std::vector<std::string> fmha_cuda_instances() {
  int n = 0;
  const AttentionInstance* table = attention_instance_table(&n);
  std::vector<std::string> out;
  for (int i = 0; i < n; ++i) {
    out.push_back(std::string(attention_kernel_name(table[i].kernel)) + "/hd" +
                  std::to_string(table[i].head_dim) + "/" + dtype_name(table[i].dtype) + " (sm " +
                  table[i].archs + ")");
  }
  return out;
}

void fmha_forward_cuda(const Context& ctx, const FmhaParams& p, const FmhaShape& shape,
                       AttentionKernel kernel) {
  const int dev = p.q.device().index;
  const DeviceGuard guard(dev);
  const AttentionInstance* inst =
      find_attention_instance(kernel, shape.head_dim, p.q.dtype(), device_props(dev).cc);
  FA_ASSERT(inst != nullptr, "choose_attention_kernel picked ", attention_kernel_name(kernel),
            " without a runnable instance");

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
  d.max_seqlen_q = shape.max_seqlen_q;
  if (d.max_seqlen_q <= 0) {  // derive it: one small copy, ordered after the work on ctx.stream
    d.max_seqlen_q = device_max_seqlen(ctx, p.cu_seqlens_q, true);
  }
  const FmhaSoftmax sm = fmha_softmax(p, shape.head_dim);
  d.softmax_scale = sm.softmax_scale;
  d.scale_log2 = sm.scale_log2;
  d.window_left = sm.window_left;
  d.window_right = sm.window_right;
  d.alibi_slopes = sm.alibi_slopes;
  d.alibi_batch_stride = static_cast<int>(sm.alibi_batch_stride);
  if (d.max_seqlen_q == 0 || shape.batch == 0) return;
  inst->fmha_launch(d, static_cast<cudaStream_t>(ctx.stream));
}

}  // namespace fastattn::kernels::cuda

// Host-side interface of the CUDA FastAttention forward (FlashAttention-2) kernels.
// fmha.cc validates FmhaParams and asks the dispatcher (attention_dispatch.h) for the kernel;
// fmha_forward_cuda runs the compiled instance of that kernel for (head dim, dtype, device).
#pragma once

#include <string>
#include <vector>

#include "fastattn/core/context.h"
#include "fastattn/kernels/attention/attention_dispatch.h"
#include "fastattn/kernels/attention/fmha.h"
#include "fastattn/kernels/attention/fmha_shape.h"

namespace fastattn::kernels::cuda {

// Runs the forward pass of FlashAttention-2 kernel `kernel` (kFmha884 / kFmha884Plain /
// kFmha1688 / kFmha16816, as choose_attention_kernel returned it) on p's CUDA tensors on
// ctx.stream. shape.max_seqlen_q = 0 reads cu_seqlens_q back from the device (a synchronising
// copy on ctx.stream).
void fmha_forward_cuda(const Context& ctx, const FmhaParams& p, const FmhaShape& shape,
                       AttentionKernel kernel);

// Every attention instance compiled into this build (FlashAttention-2 and decode), as
// "16816/hd128/float16 (sm 80;90)" / "decode-async/hd128/float32 (sm 80;90)" strings.
std::vector<std::string> fmha_cuda_instances();

}  // namespace fastattn::kernels::cuda

// The one place that decides which attention kernel runs a call (fmha_forward), as a pure
// function of plain values: the call's shape and dtypes, the `impl` it asks for, and what the
// device offers (its compute capability and the kernel instances compiled for it). The same
// function answers "is this supported?" (kNone and a reason) and "what runs?", so the two can
// never disagree (llama.cpp's ggml_cuda_get_best_fattn_kernel works the same way).
// Device-neutral: no CUDA header, so it is tested on machines without a GPU.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "fastattn/core/dtype.h"
#include "fastattn/kernels/attention/fmha_shape.h"

namespace fastattn::kernels {

// Every attention kernel a call can run on.
enum class AttentionKernel {
  kNone,             // no kernel can run the call; AttentionChoice::reason says why
  kCpu,              // the CPU tile kernels (kernels/cpu/fmha_cpu.cc)
  kFmha884,          // FlashAttention-2 (CUDA prefill) on mma.m8n8k4: Volta's path
  kFmha884Plain,     // the same with a plain, unswizzled shared-memory layout (layout baseline)
  kFmha1688,         // FlashAttention-2 on mma.m16n8k8: Turing's path
  kFmha16816,        // FlashAttention-2 on mma.m16n8k16: Ampere's and Hopper's path
  kDecodeAsync,      // split-KV decode, K / V copied by cp.async stages (sm_80+)
  kDecodeRegStaged,  // split-KV decode, K / V copied by 16-byte loads staged in registers
};

// "cpu", "884", "884-plain", "1688", "16816", "decode-async", "decode-regstage" ("none").
const char* attention_kernel_name(AttentionKernel kernel);
bool is_fmha_kernel(AttentionKernel kernel);    // a FlashAttention-2 (prefill) kernel
bool is_decode_kernel(AttentionKernel kernel);  // a split-KV decode kernel

// What FmhaParams::impl asks for (fmha.h documents each name).
enum class AttentionImpl {
  kAuto,             // "auto": the dispatcher's choice
  kFmha884,          // "884"
  kFmha884Plain,     // "884-plain"
  kFmha1688,         // "1688"
  kFmha16816,        // "16816"
  kDecode,           // "decode": the decode kernel with the device's preferred copy path
  kDecodeAsync,      // "decode-async"
  kDecodeRegStaged,  // "decode-regstage"
};

// Parses FmhaParams::impl; throws InvalidArgument naming the valid values for anything else.
AttentionImpl parse_attention_impl(const std::string& impl);

// What the choice depends on, from the validated FmhaParams (fmha.cc).
struct AttentionProblem {
  // shape.max_seqlen_q: the longest query sequence, 0 = unknown. Only the "auto" choice between
  // the decode and the FlashAttention-2 kernel reads it, and there it must be known (see
  // needs_max_seqlen_q).
  FmhaShape shape;
  DType q_dtype = DType::kFloat16;
  DType kv_dtype = DType::kFloat16;
  DType out_dtype = DType::kFloat16;
};

// What the device offers.
struct AttentionDevice {
  bool gpu = false;  // false: the tensors are CPU-addressable (the CPU kernels run)
  int cc = 0;        // GPU compute capability, e.g. 90
  // Whether the build holds an instance of `kernel` for (dtype, head dim) with code this GPU
  // runs (the instance registry's arch field decides). Unused for the CPU.
  std::function<bool(AttentionKernel kernel, DType dtype, int head_dim)> runnable;
};

struct AttentionChoice {
  AttentionKernel kernel = AttentionKernel::kNone;
  std::string reason;  // why no kernel fits (kernel == kNone), naming the option or tensor at fault
};

// The kernel that runs `problem` with `impl` on `device`:
//   CPU tensors: the CPU kernels (impl must be "auto").
//   "auto" on a GPU: paged KV or float32 -> split-KV decode; few queries per sequence
//     (decode_like) -> split-KV decode when it has an instance, else FlashAttention-2 on the
//     newest MMA path that has a runnable instance (16816, then 1688, then 884).
//   "decode": the decode copy path the device prefers (preferred_decode_kernel).
//   An explicit kernel: that one, if the call and the build allow it.
AttentionChoice choose_attention_kernel(const AttentionProblem& problem, AttentionImpl impl,
                                        const AttentionDevice& device);

// Whether choose_attention_kernel reads problem.max_seqlen_q (so a caller that does not know it
// must find it out first): "auto" on a GPU with contiguous float16 / bfloat16 KV.
bool needs_max_seqlen_q(const AttentionProblem& problem, AttentionImpl impl,
                        const AttentionDevice& device);

// Few queries per sequence: the split-KV decode kernel reads each K/V byte once for all the
// query heads of a KV head, where the FlashAttention-2 kernel's 64- / 128-row query blocks
// would be nearly empty and read K/V once per query head.
bool decode_like(int max_seqlen_q, int group);

// The decode copy path a GPU prefers: cp.async on sm_80..89, register staging elsewhere (below
// sm_80 there is no cp.async; on sm_90 register staging measured faster).
AttentionKernel preferred_decode_kernel(const AttentionDevice& device, DType dtype, int head_dim);

}  // namespace fastattn::kernels

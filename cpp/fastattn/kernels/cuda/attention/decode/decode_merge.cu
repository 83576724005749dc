// The split-merge kernel instances (decode_merge.cuh), one per dtype.
#include "fastattn/kernels/cuda/attention/decode/decode_launch.h"
#include "fastattn/kernels/cuda/attention/decode/decode_merge.cuh"

namespace fastattn::kernels::cuda {

static_assert(kDecodeMergeWarps == decode::kMergeWarps, "merge block shape");

const void* decode_merge_kernel_for(DType dtype) {
  switch (dtype) {
    case DType::kFloat16:
      return reinterpret_cast<const void*>(&decode::decode_merge_kernel<__half>);
    case DType::kBFloat16:
      return reinterpret_cast<const void*>(&decode::decode_merge_kernel<__nv_bfloat16>);
    case DType::kFloat32:
      return reinterpret_cast<const void*>(&decode::decode_merge_kernel<float>);
    default:
      return nullptr;
  }
}

}  // namespace fastattn::kernels::cuda

// Instantiates the split-KV decode kernels of one (dtype, head dim) for every row tile and lists
// them (decode_entries). Included only by the instance files decode_hd<D>_<dtype>.cu that
// cmake/generate_attention_instances.py writes, one per (head dim, dtype), so builds run in
// parallel and FASTATTN_CUDA_HEAD_DIMS narrows them.
#pragma once

#include "fastattn/kernels/cuda/attention/decode/decode_kernel.cuh"
#include "fastattn/kernels/cuda/attention/decode/decode_launch.h"

namespace fastattn::kernels::cuda::decode {

template <typename Element, int kHeadDim, int kRows>
DecodeKernelEntry make_decode_entry(DType dtype) {
  using Async = DecodeTraits<Element, kHeadDim, kRows, kDecodeAsyncStages>;
  using Staged = DecodeTraits<Element, kHeadDim, kRows, kDecodeRegStages>;
  return DecodeKernelEntry{
      dtype,
      kHeadDim,
      kRows,
      Async::kBlockN,
      Staged::kBlockN,
      reinterpret_cast<const void*>(&decode_split_kernel<Element, kHeadDim, kRows, false>),
      reinterpret_cast<const void*>(&decode_split_kernel<Element, kHeadDim, kRows, true>),
      Async::kSmemBytes,
      Staged::kSmemBytes};
}

// Row tiles 1, 2, 4, 8 and 16 (decode_cuda.cc picks the smallest that holds a sequence's rows:
// a multi-head model's decode query is one row, and a 4-row tile would do 4x its math); at head
// dim 256 up to 8 (16 rows x 8 columns of fp32 accumulators per lane would spill).
template <typename Element, int kHeadDim>
const DecodeKernelEntry* decode_entries(DType dtype, int* n) {
  if constexpr (kHeadDim <= 128) {
    static const DecodeKernelEntry entries[] = {make_decode_entry<Element, kHeadDim, 1>(dtype),
                                                make_decode_entry<Element, kHeadDim, 2>(dtype),
                                                make_decode_entry<Element, kHeadDim, 4>(dtype),
                                                make_decode_entry<Element, kHeadDim, 8>(dtype),
                                                make_decode_entry<Element, kHeadDim, 16>(dtype)};
    *n = 5;
    return entries;
  } else {
    static const DecodeKernelEntry entries[] = {make_decode_entry<Element, kHeadDim, 1>(dtype),
                                                make_decode_entry<Element, kHeadDim, 2>(dtype),
                                                make_decode_entry<Element, kHeadDim, 4>(dtype),
                                                make_decode_entry<Element, kHeadDim, 8>(dtype)};
    *n = 4;
    return entries;
  }
}

}  // namespace fastattn::kernels::cuda::decode

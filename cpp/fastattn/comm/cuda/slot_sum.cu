#include "fastattn/comm/cuda/slot_sum.h"

#include <algorithm>

#include "fastattn/core/cuda/cuda_check.h"
#include "fastattn/core/cuda/dtype_vec.cuh"

namespace fastattn::comm::cuda {
namespace {

using kernels::cuda::load_vec;
using kernels::cuda::store_vec;

constexpr int kThreads = 256;

// One vector of kVec elements per thread and step (grid-stride); float32 accumulation.
template <class E, int kVec>
__global__ void slot_sum_float_kernel(const typename E::Raw* slots, typename E::Raw* out,
                                      int64_t count, int num_slots) {
  const int64_t vectors = count / kVec;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t v = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; v < vectors;
       v += stride) {
    float acc[kVec];
    load_vec<E, kVec>(slots + v * kVec, acc);
    for (int k = 1; k < num_slots; ++k) {
      float f[kVec];
      load_vec<E, kVec>(slots + k * count + v * kVec, f);
#pragma unroll
      for (int j = 0; j < kVec; ++j) acc[j] += f[j];
    }
    store_vec<E, kVec>(out + v * kVec, acc);
  }
}

template <class T>
__global__ void slot_sum_int_kernel(const T* slots, T* out, int64_t count, int num_slots) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += stride) {
    T acc = slots[i];
    for (int k = 1; k < num_slots; ++k) acc += slots[k * count + i];
    out[i] = acc;
  }
}

// Enough blocks to fill the GPU a few times over, never more than the work.
int grid_for(int64_t items) {
  const int64_t blocks = (items + kThreads - 1) / kThreads;
  return static_cast<int>(std::clamp<int64_t>(blocks, 1, 4096));
}

}  // namespace

void launch_slot_sum(const void* slots, void* out, int64_t count, int num_slots, DType dtype,
                     cudaStream_t stream) {
  if (count <= 0) return;
  if (dtype == DType::kInt32 || dtype == DType::kInt64) {
    if (dtype == DType::kInt32) {
      slot_sum_int_kernel<int32_t><<<grid_for(count), kThreads, 0, stream>>>(
          static_cast<const int32_t*>(slots), static_cast<int32_t*>(out), count, num_slots);
    } else {
      slot_sum_int_kernel<int64_t><<<grid_for(count), kThreads, 0, stream>>>(
          static_cast<const int64_t*>(slots), static_cast<int64_t*>(out), count, num_slots);
    }
    FA_CUDA_CHECK(cudaGetLastError());
    return;
  }
  const int64_t es = static_cast<int64_t>(dtype_size(dtype));
  const int full_vec = static_cast<int>(16 / es);
  // 16-byte vectors when every slot and `out` start on 16 bytes; else one element at a time.
  const bool aligned = count % full_vec == 0 && reinterpret_cast<uintptr_t>(slots) % 16 == 0 &&
                       reinterpret_cast<uintptr_t>(out) % 16 == 0;
  kernels::cuda::dispatch_dtype_vec(dtype, aligned ? full_vec : 1, [&](auto elem, auto width) {
    using E = decltype(elem);
    constexpr int kVec = decltype(width)::value;
    using Raw = typename E::Raw;
    slot_sum_float_kernel<E, kVec><<<grid_for(count / kVec), kThreads, 0, stream>>>(
        static_cast<const Raw*>(slots), static_cast<Raw*>(out), count, num_slots);
  });
  FA_CUDA_CHECK(cudaGetLastError());
}

}  // namespace fastattn::comm::cuda

// Embedding lookup on the GPU: one CTA per token copies (and widens, for a float32 output) its
// table row in 16-byte vectors. Ids outside the table's rows give zero rows: the GPU cannot
// report a bad id without a host synchronisation, so range checks of id values are the caller's
// (documented in embedding.h).
#include <algorithm>

#include "fastattn/core/cuda/dtype_vec.cuh"
#include "fastattn/kernels/cuda/embedding_launch.h"

namespace fastattn::kernels::cuda {
namespace {

constexpr int kMaxThreads = 256;

template <class Tab, class Out, typename Id, int N>
__global__ void __launch_bounds__(kMaxThreads) embedding_kernel(const EmbeddingLaunch p) {
  const int64_t t = blockIdx.x;
  const int64_t row = static_cast<int64_t>(static_cast<const Id*>(p.ids)[t]) - p.vocab_start;
  const bool valid = row >= 0 && row < p.vocab;
  const typename Tab::Raw* src =
      static_cast<const typename Tab::Raw*>(p.table) + (valid ? row : 0) * p.ldt;
  typename Out::Raw* dst = static_cast<typename Out::Raw*>(p.out) + t * p.ldo;
  const int64_t nvec = p.cols / N;
  for (int64_t v = threadIdx.x; v < nvec; v += blockDim.x) {
    float f[N];
    if (valid) {
      load_vec<Tab, N>(src + v * N, f);
    } else {
#pragma unroll
      for (int j = 0; j < N; ++j) f[j] = 0.0f;
    }
    store_vec<Out, N>(dst + v * N, f);
  }
}

template <class Tab, class Out, typename Id, int N>
void launch_typed(const EmbeddingLaunch& p, cudaStream_t stream) {
  const int64_t nvec = p.cols / N;
  const int64_t threads =
      std::min<int64_t>(kMaxThreads, std::max<int64_t>(32, (nvec + 31) / 32 * 32));
  embedding_kernel<Tab, Out, Id, N>
      <<<static_cast<unsigned>(p.tokens), static_cast<unsigned>(threads), 0, stream>>>(p);
}

template <class Tab, class Out, typename Id>
void launch_vec(const EmbeddingLaunch& p, cudaStream_t stream) {
  constexpr int kVec = 16 / static_cast<int>(sizeof(typename Tab::Raw));
  if (p.vec == kVec) {
    launch_typed<Tab, Out, Id, kVec>(p, stream);
  } else {
    launch_typed<Tab, Out, Id, 1>(p, stream);
  }
}

template <class Tab, class Out>
void launch_ids(const EmbeddingLaunch& p, cudaStream_t stream) {
  if (p.id_type == DType::kInt64) {
    launch_vec<Tab, Out, int64_t>(p, stream);
  } else {
    launch_vec<Tab, Out, int32_t>(p, stream);
  }
}

template <class Tab>
void launch_out(const EmbeddingLaunch& p, cudaStream_t stream) {
  if (p.out_type == p.table_type) {
    launch_ids<Tab, Tab>(p, stream);
  } else {
    launch_ids<Tab, F32>(p, stream);
  }
}

}  // namespace

void launch_embedding(const EmbeddingLaunch& p, cudaStream_t stream) {
  switch (p.table_type) {
    case DType::kFloat16:
      return launch_out<F16>(p, stream);
    case DType::kBFloat16:
      return launch_out<BF16>(p, stream);
    default:
      return launch_out<F32>(p, stream);
  }
}

}  // namespace fastattn::kernels::cuda

#include "fastattn/layers/paged_gather.h"

#include <algorithm>

#include "fastattn/core/copy.h"
#include "fastattn/core/error.h"

namespace fastattn::layers {

void gather_paged(const Context& ctx, const Tensor& pool, const int32_t* table,
                  int64_t table_stride, const int32_t* lens, int num_seqs, Tensor& staging) {
  FA_ASSERT(pool.dim() == 4 && pool.is_contiguous(),
            "gather_paged: pool must be a contiguous "
            "[num_blocks, block_size, Hk, D] tensor");
  const int64_t bs = pool.size(1);
  const size_t row_bytes =
      static_cast<size_t>(pool.size(2) * pool.size(3)) * dtype_size(pool.dtype());
  const size_t block_bytes = static_cast<size_t>(bs) * row_bytes;
  char* dst = static_cast<char*>(staging.data());
  const char* src = static_cast<const char*>(pool.data());
  size_t off = 0;
  for (int b = 0; b < num_seqs; ++b) {
    const int32_t* row = table + b * table_stride;
    const int64_t len = lens[b];
    for (int64_t j = 0; j * bs < len;) {
      // A run of consecutive block ids, the last one possibly partly used.
      int64_t run = 1;
      while ((j + run) * bs < len && row[j + run] == row[j] + run) ++run;
      const int64_t tokens = std::min<int64_t>(run * bs, len - j * bs);
      const size_t bytes = static_cast<size_t>(tokens) * row_bytes;
      FA_ASSERT(off + bytes <= staging.nbytes(), "gather_paged: staging too small");
      detail::copy_bytes(ctx, dst + off, staging.device(),
                         src + static_cast<size_t>(row[j]) * block_bytes, pool.device(), bytes);
      off += bytes;
      j += run;
    }
  }
}

}  // namespace fastattn::layers

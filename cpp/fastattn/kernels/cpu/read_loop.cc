#include "fastattn/kernels/cpu/read_loop.h"

#include <algorithm>

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace fastattn::kernels::cpu {

uint64_t read_loop(const void* data, size_t bytes, int threads) {
  const uint64_t* w = static_cast<const uint64_t*>(data);
  const int64_t n = static_cast<int64_t>(bytes / 8);
#if defined(_OPENMP)
  if (threads <= 0) threads = omp_get_max_threads();
#else
  threads = 1;
#endif
  uint64_t total = 0;
#pragma omp parallel num_threads(threads) reduction(+ : total)
  {
#if defined(_OPENMP)
    const int64_t t = omp_get_thread_num(), nt = omp_get_num_threads();
#else
    const int64_t t = 0, nt = 1;
#endif
    // Contiguous shares, 64-byte aligned, so each thread streams its own range.
    const int64_t per = (n + nt - 1) / nt / 8 * 8 + 8;
    const int64_t b = std::min<int64_t>(n, t * per), e = std::min<int64_t>(n, b + per);
    uint64_t acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t i = b;
    for (; i + 8 <= e; i += 8)
      for (int k = 0; k < 8; ++k) acc[k] += w[i + k];
    for (; i < e; ++i) acc[0] += w[i];
    for (int k = 0; k < 8; ++k) total += acc[k];
  }
  return total;
}

}  // namespace fastattn::kernels::cpu

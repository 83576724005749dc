// A plain multi-threaded read loop: the yardstick the CPU attention kernels' KV bandwidth is
// compared against (`fastattention bench spill-cpu`).
#pragma once

#include <cstddef>
#include <cstdint>

namespace fastattn::kernels::cpu {

// Reads `bytes` bytes at `data` once on `threads` OpenMP threads (static contiguous shares,
// 64-bit loads summed into independent accumulators, which the compiler vectorises) and returns
// the sum, so the reads cannot be optimised away. bytes need not be a multiple of 8 (the tail is
// ignored). threads <= 0: OpenMP's default.
uint64_t read_loop(const void* data, size_t bytes, int threads);

}  // namespace fastattn::kernels::cpu

// Tiling-AllReduce (the FastAttention paper's): a row-parallel GEMM y = x @ w^T whose output is
// summed over the tensor-parallel ranks is computed in row tiles, and the all-reduce of tile i
// runs while tile i+1 is computed: on a GPU the all-reduce is on the communicator's
// communication stream, ordered after tile i's GEMM by an event; on the CPU it is a non-blocking
// MPI all-reduce progressed by the communicator's progress thread.
#pragma once

#include <cstdint>
#include <functional>

#include "fastattn/comm/communicator.h"

namespace fastattn::comm {

// Rows of each tile below which tiling does not pay on this backend, and the most tiles:
// CPU ranks across machines 512 rows, 4 tiles; CPU ranks of one machine and GPUs no tiling
// (max_tiles 1). num_tiles overrides it.
struct TileHeuristic {
  int64_t min_rows_per_tile = 256;
  int max_tiles = 4;
};
TileHeuristic default_tile_heuristic(const Communicator& comm);

// Tiles for a row-parallel GEMM of `tokens` rows on `comm`: 1 (one GEMM, one all-reduce) when
// comm.tiling().overlap is off, for one rank, or where tiles would be too small to pay;
// comm.tiling().num_tiles when set (capped at `tokens`); else tokens / min_rows_per_tile,
// capped at max_tiles.
int choose_num_tiles(const Communicator& comm, int64_t tokens);

// How a row-parallel GEMM y[rows, cols] = x[rows, inner] @ w^T is tiled.
struct TilePlan {
  int tiles = 1;     // row tiles (1: one GEMM, then one all-reduce)
  int gemm_sms = 0;  // SMs each tile GEMM may use (GPU; 0 = all)
};

// The plan for `comm`: choose_num_tiles(comm, rows) tiles, and on GPUs the tile GEMMs' SMs.
// GPUs get one tile (no overlap) unless comm.tiling().num_tiles asks for more: measured on
// 2 x H200 (NVLink, NCCL 2.28; docs/results/*_h200x2_2026-11-22.*), 4 tiles save 6-14% of the
// isolated GEMM + all-reduce from 6e10 multiply-adds on, yet make whole prefills 2-7% slower
// (Llama-7B and Pangu-38B shapes, 2K and 8K tokens), so they are not the default. Tiles asked
// for run their GEMMs on 8/11 of the SMs while the GEMM has fewer than kGpuFullSmMacs
// multiply-adds (the rest go to NCCL's all-reduce of the previous tile; bigger GEMMs are better
// off with every SM); comm.tiling().gemm_sms >= 0 overrides that.
TilePlan plan_tiles(const Communicator& comm, int64_t rows, int64_t cols, int64_t inner);
constexpr double kGpuFullSmMacs = 4.0e11;

// Row range [begin, end) of tile i of n over `rows` rows (tiles differ by at most one row).
void tile_rows(int64_t rows, int n, int i, int64_t& begin, int64_t& end);

// For i = 0 .. num_tiles-1: compute(begin_i, end_i) writes rows [begin_i, end_i) of y, then their
// all-reduce starts asynchronously; tile i+1 is computed while it runs. Returns when every row
// of y is summed over the ranks (CPU) or once that is ordered before later work on ctx.stream
// (GPU). y: contiguous [rows, ...]. With num_tiles <= 1: compute(0, rows), then a blocking
// all-reduce. On an exception every started all-reduce is waited for before it propagates.
void tiled_all_reduce(const Context& ctx, Communicator& comm, Tensor& y, int num_tiles,
                      const std::function<void(int64_t begin, int64_t end)>& compute);

}  // namespace fastattn::comm

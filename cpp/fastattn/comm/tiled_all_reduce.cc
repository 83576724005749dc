#include "fastattn/comm/tiled_all_reduce.h"

#include <algorithm>
#include <memory>
#include <vector>

namespace fastattn::comm {

TileHeuristic default_tile_heuristic(const Communicator& comm) {
  TileHeuristic h;
  if (comm.device().type == DeviceType::kCUDA) {
    // GPUs: no tiling unless asked for (plan_tiles in tiled_all_reduce.h says why).
    h.max_tiles = 1;
  } else if (comm.single_node()) {
    // CPU ranks of one machine: the all-reduce is copies and adds on the cores the GEMM tiles
    // need too, so tiling only adds overhead (measured: 1-12% slower at 1K-2K tokens).
    h.max_tiles = 1;
  } else {
    // Across machines the network moves the data while the cores compute.
    h.min_rows_per_tile = 512;
    h.max_tiles = 4;
  }
  return h;
}

int choose_num_tiles(const Communicator& comm, int64_t tokens) {
  const TiledAllReduceOptions& o = comm.tiling();
  if (!o.overlap || comm.size() <= 1 || tokens <= 1) return 1;
  if (o.num_tiles > 0) return static_cast<int>(std::min<int64_t>(o.num_tiles, tokens));
  const TileHeuristic h = default_tile_heuristic(comm);
  const int64_t n = tokens / std::max<int64_t>(h.min_rows_per_tile, 1);
  return static_cast<int>(std::clamp<int64_t>(n, 1, h.max_tiles));
}

TilePlan plan_tiles(const Communicator& comm, int64_t rows, int64_t cols, int64_t inner) {
  TilePlan plan;
  plan.tiles = choose_num_tiles(comm, rows);
  if (plan.tiles <= 1 || comm.device().type != DeviceType::kCUDA) return plan;
  const int sms = comm.tiling().gemm_sms;
  const double macs =
      static_cast<double>(rows) * static_cast<double>(cols) * static_cast<double>(inner);
  if (sms >= 0) {
    plan.gemm_sms = sms;
  } else if (macs < kGpuFullSmMacs) {
    plan.gemm_sms = comm.sm_count() * 8 / 11;  // 96 of an H200's 132
  }
  return plan;
}

void tile_rows(int64_t rows, int n, int i, int64_t& begin, int64_t& end) {
  begin = rows * i / n;
  end = rows * (i + 1) / n;
}

void tiled_all_reduce(const Context& ctx, Communicator& comm, Tensor& y, int num_tiles,
                      const std::function<void(int64_t begin, int64_t end)>& compute) {
  FA_CHECK(y.dim() >= 1 && y.is_contiguous(), comm.where(), ": tiled all-reduce: y ", y.describe(),
           " must be contiguous with rows along dim 0");
  const int64_t rows = y.size(0);
  const int n =
      static_cast<int>(std::min<int64_t>(std::max(num_tiles, 1), std::max<int64_t>(rows, 1)));
  if (n <= 1) {
    compute(0, rows);
    comm.all_reduce_sum(ctx, y);
    return;
  }
  std::vector<std::unique_ptr<CommRequest>> pending;
  pending.reserve(static_cast<size_t>(n));
  try {
    for (int i = 0; i < n; ++i) {
      int64_t begin = 0;
      int64_t end = 0;
      tile_rows(rows, n, i, begin, end);
      compute(begin, end);
      Tensor tile = y.slice(0, begin, end);
      pending.push_back(comm.all_reduce_sum_async(ctx, tile));
    }
    for (auto& r : pending) r->wait();
  } catch (...) {
    // The buffers stay in use until every started all-reduce has ended.
    for (auto& r : pending) {
      try {
        r->wait();
      } catch (...) {
      }
    }
    throw;
  }
}

}  // namespace fastattn::comm
